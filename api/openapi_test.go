package api

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"
)

// openAPIPath is the project's API description, relative to this package.
const openAPIPath = "../openapi.yaml"

// openAPIDoc is the part of openapi.yaml the test checks.
type openAPIDoc struct {
	OpenAPI    string                          `yaml:"openapi"`
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components struct {
		Schemas map[string]yaml.Node `yaml:"schemas"`
	} `yaml:"components"`
}

// openAPIMethods are the keys of a path item that are operations.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// TestOpenAPIMatchesRouter keeps openapi.yaml honest: every route of the
// router is documented and every documented operation is routed, every
// operation declares its responses, every problem type the package can
// produce is listed (and no other), and every header the handlers read or
// set is described.
func TestOpenAPIMatchesRouter(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatalf("read %s: %v", openAPIPath, err)
	}
	var doc openAPIDoc
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parse %s: %v", openAPIPath, err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("%s: openapi is %q, want 3.1.x", openAPIPath, doc.OpenAPI)
	}

	documented := documentedOperations(t, doc)
	routed := routerOperations(t)

	t.Run("routes", func(t *testing.T) {
		t.Parallel()
		var undocumented, unrouted []string
		for op := range routed {
			if _, ok := documented[op]; !ok {
				undocumented = append(undocumented, op)
			}
		}
		for op := range documented {
			if !routed[op] {
				unrouted = append(unrouted, op)
			}
		}
		slices.Sort(undocumented)
		slices.Sort(unrouted)
		if len(undocumented) > 0 {
			t.Errorf("routes in the router but not in %s:\n\t%s", openAPIPath, strings.Join(undocumented, "\n\t"))
		}
		if len(unrouted) > 0 {
			t.Errorf("operations in %s but not in the router:\n\t%s", openAPIPath, strings.Join(unrouted, "\n\t"))
		}
	})

	t.Run("responses", func(t *testing.T) {
		t.Parallel()
		statusRE := regexp.MustCompile(`^([1-5][0-9][0-9]|[1-5]XX|default)$`)
		for op, node := range documented {
			var o struct {
				Responses map[string]yaml.Node `yaml:"responses"`
			}
			if err := node.Decode(&o); err != nil {
				t.Errorf("%s: %v", op, err)
				continue
			}
			if len(o.Responses) == 0 {
				t.Errorf("%s declares no responses", op)
			}
			for code := range o.Responses {
				if !statusRE.MatchString(code) {
					t.Errorf("%s: response key %q is not a status code", op, code)
				}
			}
		}
	})

	t.Run("problem types", func(t *testing.T) {
		t.Parallel()
		used := problemKindsInSource(t)
		listed := listedProblemKinds(t, doc)
		text := string(raw)
		var missing, stale []string
		for kind, where := range used {
			if !listed[kind] {
				missing = append(missing, problemTypeBase+kind+" (built at "+where+")")
			}
		}
		for kind := range listed {
			if _, ok := used[kind]; !ok {
				stale = append(stale, problemTypeBase+kind)
			}
		}
		// Examples and response schemas may not name a type the code cannot produce.
		for _, m := range regexp.MustCompile(regexp.QuoteMeta(problemTypeBase)+`([a-z0-9-]+)`).FindAllStringSubmatch(text, -1) {
			if _, ok := used[m[1]]; !ok && !slices.Contains(stale, m[0]) {
				stale = append(stale, m[0])
			}
		}
		slices.Sort(missing)
		slices.Sort(stale)
		if len(missing) > 0 {
			t.Errorf("problem types the api package produces but %s does not list in components.schemas.Problem.properties.type.enum:\n\t%s",
				openAPIPath, strings.Join(missing, "\n\t"))
		}
		if len(stale) > 0 {
			t.Errorf("problem types in %s that the api package never produces:\n\t%s", openAPIPath, strings.Join(stale, "\n\t"))
		}
	})

	t.Run("headers", func(t *testing.T) {
		t.Parallel()
		requestHeaders, responseHeaders := headersInSource(t)
		documentedRequest, documentedResponse := documentedHeaders(t, raw)
		var missing []string
		for name, where := range requestHeaders {
			if !documentedRequest[strings.ToLower(name)] {
				missing = append(missing, "request header "+name+" (read at "+where+")")
			}
		}
		for name, where := range responseHeaders {
			if !documentedResponse[strings.ToLower(name)] {
				missing = append(missing, "response header "+name+" (set at "+where+")")
			}
		}
		slices.Sort(missing)
		if len(missing) > 0 {
			t.Errorf("headers the handlers use but %s does not describe:\n\t%s", openAPIPath, strings.Join(missing, "\n\t"))
		}
	})
}

// documentedOperations returns "METHOD /path" → operation node for every
// operation in openapi.yaml, with path parameters named as in the document.
func documentedOperations(t *testing.T, doc openAPIDoc) map[string]yaml.Node {
	t.Helper()
	if len(doc.Paths) == 0 {
		t.Fatalf("%s has no paths", openAPIPath)
	}
	ops := map[string]yaml.Node{}
	for path, item := range doc.Paths {
		for key, node := range item {
			if !slices.Contains(openAPIMethods, key) {
				continue // summary, description, parameters, servers, $ref
			}
			ops[strings.ToUpper(key)+" "+path] = node
		}
	}
	return ops
}

// chiParamRE matches a chi path parameter, with or without a regexp.
var chiParamRE = regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}`)

// routerOperations returns "METHOD /path" for every route of the router, in
// OpenAPI path-template form: chi's catch-all "/*" is the submit endpoint,
// "/{routingPath}"; "{id}" and "{id:regexp}" become "{id}".
func routerOperations(t *testing.T) map[string]bool {
	t.Helper()
	s, err := New(DefaultConfig(), nil, nil, http.NotFoundHandler(), uuid.New, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	routes, ok := s.Handler().(chi.Routes)
	if !ok {
		t.Fatalf("Handler() is a %T, not chi.Routes", s.Handler())
	}
	ops := map[string]bool{}
	err = chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route == "/*" {
			route = "/{routingPath}"
		}
		route = chiParamRE.ReplaceAllString(route, "{$1}")
		ops[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatalf("walk router: %v", err)
	}
	if len(ops) == 0 {
		t.Fatal("the router has no routes")
	}
	return ops
}

// listedProblemKinds returns the kinds in components.schemas.Problem's type enum.
func listedProblemKinds(t *testing.T, doc openAPIDoc) map[string]bool {
	t.Helper()
	node, ok := doc.Components.Schemas["Problem"]
	if !ok {
		t.Fatalf("%s has no components.schemas.Problem", openAPIPath)
	}
	var schema struct {
		Properties struct {
			Type struct {
				Enum []string `yaml:"enum"`
			} `yaml:"type"`
		} `yaml:"properties"`
	}
	if err := node.Decode(&schema); err != nil {
		t.Fatalf("decode components.schemas.Problem: %v", err)
	}
	kinds := map[string]bool{}
	for _, v := range schema.Properties.Type.Enum {
		kind, ok := strings.CutPrefix(v, problemTypeBase)
		if !ok {
			t.Errorf("Problem type %q does not start with %s", v, problemTypeBase)
			continue
		}
		kinds[kind] = true
	}
	if len(kinds) == 0 {
		t.Errorf("components.schemas.Problem.properties.type has no enum of problem types")
	}
	return kinds
}

// parsePackage parses the non-test Go files of the directory dir.
func parsePackage(t *testing.T, fset *token.FileSet, dir string) []*ast.File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatalf("no Go files in %s", dir)
	}
	return files
}

// problemKindsInSource returns every problem kind the api package can build,
// with where it is built: the string literal passed to problem(status, kind,
// ...), which covers the errXxx helpers of problem.go, plus the kinds built
// from values at run time, which are expanded from the correlation package's
// constants. A new kind built from an expression the test does not know
// fails the test, so it cannot slip past undocumented.
func problemKindsInSource(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	statuses, outcomes := correlationConstants(t)
	// Kinds computed at run time, and the values they can take.
	dynamic := map[string][]string{
		// getReply: a request that ended without a reply; queued and
		// pending answer 202, replied, failed and partial answer 200.
		"string(rec.Status)": without(statuses, "queued", "pending", "replied", "failed", "partial"),
		// postReply: outcomes that are neither 200 (stored, duplicate) nor
		// 404 (unknown).
		`"reply-" + string(outcome)`: prefixed("reply-", without(outcomes, "stored", "duplicate", "unknown")),
	}
	kinds := map[string]string{}
	for _, f := range parsePackage(t, fset, ".") {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); !ok || id.Name != "problem" {
				return true
			}
			where := fset.Position(call.Pos()).String()
			if len(call.Args) < 2 {
				t.Errorf("%s: problem() with %d arguments", where, len(call.Args))
				return true
			}
			arg := call.Args[1]
			if lit, ok := arg.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				kind, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					return true
				}
				kinds[kind] = where
				return true
			}
			expr := types.ExprString(arg)
			values, ok := dynamic[expr]
			if !ok {
				t.Errorf("%s: problem kind built from %s; teach TestOpenAPIMatchesRouter which kinds it can be", where, expr)
				return true
			}
			for _, v := range values {
				kinds[v] = where
			}
			return true
		})
	}
	if len(kinds) == 0 {
		t.Fatal("found no problem(...) calls in the api package")
	}
	return kinds
}

// correlationConstants reads the values of the Status and Outcome constants
// of package correlation from its source.
func correlationConstants(t *testing.T) (statuses, outcomes []string) {
	t.Helper()
	fset := token.NewFileSet()
	for _, f := range parsePackage(t, fset, filepath.Join("..", "correlation")) {
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				typ, ok := vs.Type.(*ast.Ident)
				if !ok || (typ.Name != "Status" && typ.Name != "Outcome") {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: %s constant is not a string literal", fset.Position(v.Pos()), typ.Name)
					}
					s, _ := strconv.Unquote(lit.Value)
					if typ.Name == "Status" {
						statuses = append(statuses, s)
					} else {
						outcomes = append(outcomes, s)
					}
				}
			}
		}
	}
	if len(statuses) == 0 || len(outcomes) == 0 {
		t.Fatalf("found no Status or Outcome constants in package correlation")
	}
	return statuses, outcomes
}

func without(all []string, drop ...string) []string {
	var out []string
	for _, s := range all {
		if !slices.Contains(drop, s) {
			out = append(out, s)
		}
	}
	return out
}

func prefixed(prefix string, all []string) []string {
	out := make([]string, len(all))
	for i, s := range all {
		out[i] = prefix + s
	}
	return out
}

// headersInSource returns the header names the api package reads from
// requests (r.Header.Get/Values("X")) and sets on responses
// (w.Header().Set("X", ...), h.Set("X", ...) and h["X"] = ... where
// h := w.Header()), with where each is used. Content-Type is left out: OpenAPI
// describes it through the media types of bodies.
func headersInSource(t *testing.T) (request, response map[string]string) {
	t.Helper()
	fset := token.NewFileSet()
	request, response = map[string]string{}, map[string]string{}
	isHeaderCall := func(e ast.Expr, aliases map[string]bool) bool {
		if id, ok := e.(*ast.Ident); ok {
			return aliases[id.Name]
		}
		call, ok := e.(*ast.CallExpr)
		if !ok {
			return false
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		return ok && sel.Sel.Name == "Header" && len(call.Args) == 0
	}
	literal := func(e ast.Expr) (string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	}
	add := func(m map[string]string, name string, pos token.Pos) {
		if !strings.EqualFold(name, "Content-Type") {
			m[name] = fset.Position(pos).String()
		}
	}
	for _, f := range parsePackage(t, fset, ".") {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			aliases := map[string]bool{} // variables holding w.Header()
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.AssignStmt:
					for i, rhs := range n.Rhs {
						if i < len(n.Lhs) && isHeaderCall(rhs, nil) {
							if id, ok := n.Lhs[i].(*ast.Ident); ok {
								aliases[id.Name] = true
							}
						}
					}
					for _, lhs := range n.Lhs {
						if idx, ok := lhs.(*ast.IndexExpr); ok && isHeaderCall(idx.X, aliases) {
							if name, ok := literal(idx.Index); ok {
								add(response, name, idx.Pos())
							}
						}
					}
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok || len(n.Args) == 0 {
						return true
					}
					name, ok := literal(n.Args[0])
					if !ok {
						return true
					}
					switch sel.Sel.Name {
					case "Get", "Values":
						// r.Header.Get: the receiver is the Header field, not a call.
						if field, ok := sel.X.(*ast.SelectorExpr); ok && field.Sel.Name == "Header" {
							add(request, name, n.Pos())
						}
					case "Set", "Add":
						if isHeaderCall(sel.X, aliases) {
							add(response, name, n.Pos())
						}
					}
				}
				return true
			})
		}
	}
	if len(request) == 0 || len(response) == 0 {
		t.Fatal("found no request or response headers in the api package")
	}
	return request, response
}

// documentedHeaders returns the lower-cased names of the header parameters
// and the response headers described anywhere in openapi.yaml. The keys of
// components.headers are component names, not header names, and are skipped.
func documentedHeaders(t *testing.T, raw []byte) (request, response map[string]bool) {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	request, response = map[string]bool{}, map[string]bool{}
	var walk func(n *yaml.Node, parentKey string)
	walk = func(n *yaml.Node, parentKey string) {
		if n.Kind == yaml.MappingNode {
			var name, in string
			for i := 0; i+1 < len(n.Content); i += 2 {
				key, val := n.Content[i], n.Content[i+1]
				switch key.Value {
				case "name":
					name = val.Value
				case "in":
					in = val.Value
				case "headers":
					if val.Kind == yaml.MappingNode && parentKey != "components" {
						for j := 0; j < len(val.Content); j += 2 {
							response[strings.ToLower(val.Content[j].Value)] = true
						}
					}
				}
			}
			if in == "header" && name != "" {
				request[strings.ToLower(name)] = true
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], n.Content[i].Value)
			}
			return
		}
		for _, c := range n.Content {
			walk(c, parentKey)
		}
	}
	walk(&root, "")
	return request, response
}
