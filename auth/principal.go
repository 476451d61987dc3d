package auth

import (
	"context"

	"github.com/google/uuid"
)

// DefaultProject is the project of the migration that introduced projects
// (named "default"): it holds what existed before, and its admins are the
// gateway's operators.
var DefaultProject = uuid.Nil

// DefaultProjectName is the name of DefaultProject.
const DefaultProjectName = "default"

// Principal is who a call is made by, as the Middleware established it.
type Principal struct {
	ProjectID   uuid.UUID
	ProjectName string
	// KeyID is the API key the call was made with; uuid.Nil when none (a
	// read token, or --insecure-no-auth).
	KeyID  uuid.UUID
	Scopes Scopes
	// RequestID is set for a read token: the only request it may read.
	RequestID uuid.UUID
	// Insecure is set when the gateway runs with --insecure-no-auth and
	// the call came without credentials.
	Insecure bool
}

// Operator reports whether the principal operates the gateway: it may see
// and manage every project. That is an admin key of DefaultProject, or any
// call under --insecure-no-auth. A read token never is.
func (p Principal) Operator() bool {
	if p.Insecure {
		return true
	}
	return p.RequestID == uuid.Nil && p.ProjectID == DefaultProject && p.Scopes.IsAdmin()
}

// CanSubmit reports whether the principal may submit a request with
// routingKey (into its own project). A read token never may.
func (p Principal) CanSubmit(routingKey string) bool {
	if p.RequestID != uuid.Nil {
		return false
	}
	return p.Scopes.CanSubmit(routingKey)
}

// CanRead reports whether the principal may read the request requestID of
// projectID, submitted with routingKey. A read token may read its one
// request and nothing else; a key needs the request to be in its project
// (or to be an operator's) and a scope that reads routingKey.
//
// Callers answer a request of another project 404, as if it did not exist.
func (p Principal) CanRead(projectID, requestID uuid.UUID, routingKey string) bool {
	if p.RequestID != uuid.Nil {
		return requestID == p.RequestID && projectID == p.ProjectID
	}
	if projectID != p.ProjectID && !p.Operator() {
		return false
	}
	return p.Scopes.CanRead(routingKey)
}

// InsecurePrincipal is the principal of a call without credentials under
// --insecure-no-auth: the default project, with every scope.
func InsecurePrincipal() Principal {
	return Principal{
		ProjectID:   DefaultProject,
		ProjectName: DefaultProjectName,
		Scopes:      Scopes{ScopeAdmin, "submit:#", "read:#"},
		Insecure:    true,
	}
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the Middleware put in ctx.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
