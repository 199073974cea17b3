"""The FHIR REST client: the prefetch fallback and the batch review's per-patient searches."""
