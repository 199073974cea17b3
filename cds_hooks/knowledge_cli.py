"""`cramp-cds knowledge show | lookup | import`: what the knowledge matches, why, and a site's code maps."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from plugin.knowledge import KnowledgeError, default_knowledge, load_knowledge, site_knowledge_files
from plugin.knowledge.explain import lookup, parse_system, show

HELP = "show what a contributor matches, look up a code, check a site code map"
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("show", help="what a contributor matches and where each code came from")
    p.add_argument("contributor", help="a contributor id, e.g. loop-diuretic")
    p.add_argument("--codes", action="store_true", help="list every code of the terminology pack")
    p = sub.add_parser("lookup", help="which contributor SYSTEM|CODE maps to, and why")
    p.add_argument("coding", help="SYSTEM|CODE, e.g. rxnorm|200801, ndc|0054-4297-25, icd10cm|N18.4, "
                                  "or a site's own system URI|code")
    p = sub.add_parser("import", help="validate a site code map (FHIR ValueSet or ConceptMap) and say what "
                                      "it adds; it takes effect through CRAMP_SITE_KNOWLEDGE")
    p.add_argument("file", type=Path)


def run(args: argparse.Namespace) -> int:
    try:
        knowledge = default_knowledge()
    except KnowledgeError as exc:
        print(f"cramp-cds: knowledge error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "show":
        if args.contributor not in knowledge.contributors:
            print(f"cramp-cds: unknown contributor {args.contributor!r}; known: "
                  f"{', '.join(knowledge.contributors)}", file=sys.stderr)
            return EXIT_USAGE
        print("\n".join(show(knowledge, args.contributor, every_code=args.codes)))
        return EXIT_OK
    if args.action == "lookup":
        system, sep, code = args.coding.rpartition("|")
        if not sep or not system.strip() or not code.strip():
            print("cramp-cds: give the code as SYSTEM|CODE, e.g. rxnorm|200801", file=sys.stderr)
            return EXIT_USAGE
        reasons = lookup(knowledge, parse_system(system), code)
        if not reasons:
            print(f"{args.coding}: maps to no contributor")
            return EXIT_NOT_FOUND
        for r in reasons:
            print(f"{args.coding} -> {r.contributor}: {r.how}\n    from {r.where}")
        return EXIT_OK
    return _import(args.file)


def _import(path: Path) -> int:
    try:
        with_file = load_knowledge(site=(*site_knowledge_files(), path))
    except KnowledgeError as exc:
        print(f"cramp-cds: {exc}", file=sys.stderr)
        return EXIT_USAGE
    mine = [sc for sc in with_file.site_codes if Path(sc.file) == path]
    counts = Counter(sc.contributor for sc in mine)
    print(f"{path}: valid; {len(mine)} codes for " + ", ".join(f"{cid} ({n})" for cid, n in counts.items()))
    print(f"To use it, start the service or the batch review with CRAMP_SITE_KNOWLEDGE={path} "
          "(several files: separate them with ':').")
    return EXIT_OK
