package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// Rules is the rule engine's part of the API (package rules): inbound
// webhooks (POST /v1/hooks/{source}), the loaded rules, their firings and
// the dry run.
type Rules interface {
	Routes(m chi.Router)
}

// SetRules mounts the rule engine's routes under /v1; call it before
// Handler. Without it those routes answer 404.
func (s *Server) SetRules(r Rules) { s.rules = r }

// rulesRoutes registers the rule engine's routes, or, when it is off, the
// same paths answering 404, so the API's shape does not depend on it.
func (s *Server) rulesRoutes(r chi.Router) {
	if s.rules != nil {
		s.rules.Routes(r)
		return
	}
	off := func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, errNotFound("this gateway runs no rule engine (SWITCHBOARD_RULES_DIR is not set)"))
	}
	r.Post("/hooks/{source}", off)
	r.Get("/rules", off)
	r.Post("/rules/test", off)
	r.Get("/rules/{name}/firings", off)
}
