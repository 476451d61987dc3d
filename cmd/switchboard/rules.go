package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/switchboard-gw/switchboard/rules"
)

const rulesUsage = `usage:
  switchboard rules check FILE|DIR...   validate rule files offline
  switchboard rules run [flags] [DIR]   run the rules engine on its own (DIR, or SWITCHBOARD_RULES_DIR)

run takes serve's flags and environment; it is a gateway instance whose HTTP
side serves only /v1/hooks/, /v1/rules, /healthz, /readyz and /metrics.

A directory stands for its *.yaml and *.yml files. check prints
"ok: N rules, M sources in K files", or every problem found, one a line,
and then exits with status 1.
`

// runRules runs the rules subcommands.
func runRules(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return subcommand("rules", rulesUsage, args, stdout, stderr, map[string]func([]string) error{
		"check": func(a []string) error { return runRulesCheck(a, stdout, stderr) },
		"run":   func(a []string) error { return runRulesRun(ctx, a, getenv, stderr) },
	})
}

// runRulesCheck validates rule files as switchboard would load them: the
// files together form one rule set, so a rule may name a source of another
// file and names must be unique across them.
func runRulesCheck(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return errUsage
	}
	var files []string
	for _, arg := range args {
		fi, err := os.Stat(arg)
		if err != nil || !fi.IsDir() {
			files = append(files, arg) // LoadFiles reports a missing file
			continue
		}
		var found []string
		for _, pattern := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(arg, pattern))
			found = append(found, m...)
		}
		slices.Sort(found)
		if len(found) == 0 {
			fmt.Fprintf(stderr, "%s: no *.yaml or *.yml files\n", arg)
			return errors.New("no rule files to check")
		}
		files = append(files, found...)
	}
	set, err := rules.LoadFiles(files...)
	if err != nil {
		problems := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			problems = j.Unwrap()
		}
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		if len(problems) == 1 {
			return errors.New("1 problem in the rule files")
		}
		return fmt.Errorf("%d problems in the rule files", len(problems))
	}
	fmt.Fprintf(stdout, "ok: %s, %s in %s\n", plural(len(set.Rules), "rule"), plural(len(set.Sources), "source"), plural(len(set.Files), "file"))
	return nil
}

// plural renders n with noun, as "1 rule" or "3 rules".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// runRulesRun runs the rules engine apart from the public API.
func runRulesRun(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadServeConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	switch rest := cfg.Args; {
	case len(rest) == 1:
		cfg.RulesDir = rest[0]
	case len(rest) > 1:
		return fmt.Errorf("rules run takes one rule directory, not %d arguments", len(rest))
	}
	if cfg.RulesDir == "" {
		return errors.New("rules run needs a rule directory: an argument, or SWITCHBOARD_RULES_DIR")
	}
	cfg.Console = false
	return serve(ctx, cfg, true, stderr)
}
