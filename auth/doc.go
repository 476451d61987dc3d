// Package auth decides who is calling and what they may do.
//
// Every request belongs to a project. A caller proves who it is with an API
// key (Authorization: Bearer sb_...), or, in a browser following one
// request, with a short-lived read token (the access_token query
// parameter). The Middleware turns either into a Principal, put in the
// request's context: its project, its key id (never the key), its scopes
// and, for a token, the one request it may read. Handlers ask the
// Principal, not the credentials.
//
// Keys are 256 random bits, shown once at creation and stored only as a
// SHA-256 hash; they carry scopes (admin, submit:PATTERN, read:PATTERN over
// routing keys), may expire, and may be revoked. The Store keeps projects
// and keys in Postgres and serves the admin API (Routes).
//
// Secure by default: a request without valid credentials is answered 401.
// Only when the operator starts the gateway with --insecure-no-auth does a
// request without credentials pass, as an operator of the default project,
// and every such request logs a warning.
package auth
