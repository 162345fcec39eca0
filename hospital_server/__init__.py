"""hospital_server: ingest, encrypted storage, clinician API, audit, consent, export, lifecycle,
and the hospital's certificate authority. Importing this package builds nothing (no engine, no
app, no settings): use the factories."""
