"""The CDS Hooks service: app factory, routes, hooks, prefetch, request validation, services registry,
OpenAPI, card conformance, errors as OperationOutcome. It imports neither the batch review nor the sandbox."""
