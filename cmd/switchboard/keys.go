package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/auth"
)

const keysUsage = `usage:
  switchboard keys create --project NAME --name NAME --scope SCOPE... [--expires 720h]
  switchboard keys list [--project NAME]
  switchboard keys revoke ID

A scope is admin, submit:PATTERN or read:PATTERN, PATTERN an AMQP topic
pattern over routing keys (* one word, # zero or more). Repeat --scope for
several. The key is printed once, at creation: it is stored only as a hash.
An admin key of the project "default" is an operator's: it manages every
project.
`

const projectsUsage = `usage:
  switchboard projects create NAME
  switchboard projects list
`

// runKeys runs the keys subcommands.
func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return subcommand("keys", keysUsage, args, stdout, stderr, map[string]func([]string) error{
		"create": func(a []string) error { return runKeysCreate(ctx, a, getenv, stdout, stderr) },
		"list":   func(a []string) error { return runKeysList(ctx, a, getenv, stdout, stderr) },
		"revoke": func(a []string) error { return runKeysRevoke(ctx, a, getenv, stdout, stderr) },
	})
}

// runProjects runs the projects subcommands.
func runProjects(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return subcommand("projects", projectsUsage, args, stdout, stderr, map[string]func([]string) error{
		"create": func(a []string) error { return runProjectsCreate(ctx, a, getenv, stdout, stderr) },
		"list":   func(a []string) error { return runProjectsList(ctx, a, getenv, stdout, stderr) },
	})
}

// subcommand runs the command of group named by args[0] with the rest of
// args, printing usage for help, and to stderr with an error otherwise.
func subcommand(group, usage string, args []string, stdout, stderr io.Writer, cmds map[string]func([]string) error) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	if run, ok := cmds[args[0]]; ok {
		return run(args[1:])
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown %s command %q", errUsage, group, args[0])
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// keyStoreFlags adds the flags every keys and projects command shares.
type keyStoreFlags struct {
	dbURL, logLevel, logFormat string
}

func (k *keyStoreFlags) add(f *envFlags) {
	f.str(&k.dbURL, "database-url", "SWITCHBOARD_DATABASE_URL", defaultDatabaseURL, "Postgres URL; the database is created if missing")
	f.logFlags(&k.logLevel, &k.logFormat)
}

// open migrates the database, as serve would, and returns the key store
// and a function that closes it.
func (k *keyStoreFlags) open(ctx context.Context, stderr io.Writer) (*auth.Store, func(), error) {
	level, err := parseLog(k.logLevel, k.logFormat)
	if err != nil {
		return nil, nil, err
	}
	// Migrations log at info; a key command says only what went wrong.
	logger := newLogger(stderr, max(level, slog.LevelWarn), k.logFormat)
	if err := ensureDatabase(ctx, k.dbURL, logger); err != nil {
		return nil, nil, err
	}
	if err := migrate(ctx, k.dbURL, logger); err != nil {
		return nil, nil, err
	}
	pool, err := pgxpool.New(ctx, k.dbURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to database: %w", err)
	}
	store := auth.NewStore(pool, logger)
	return store, func() { store.Close(); pool.Close() }, nil
}

func runKeysCreate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newEnvFlags("keys create", getenv, stderr)
	var db keyStoreFlags
	db.add(f)
	var project, name string
	var scopes stringList
	var expires time.Duration
	f.fs.StringVar(&project, "project", auth.DefaultProjectName, "the project the key belongs to")
	f.fs.StringVar(&name, "name", "", "a name to tell the key apart (required)")
	f.fs.Var(&scopes, "scope", "a scope: admin, submit:PATTERN or read:PATTERN (repeatable; at least one)")
	f.fs.DurationVar(&expires, "expires", 0, "how long the key works, e.g. 720h; 0: until revoked")
	if err := f.parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("keys create: unexpected argument %q (flags come before arguments)", f.fs.Arg(0))
	}
	if name == "" {
		return errors.New("keys create: --name is required")
	}
	if len(scopes) == 0 {
		return errors.New("keys create: at least one --scope is required (admin, submit:PATTERN or read:PATTERN)")
	}
	if expires < 0 {
		return errors.New("keys create: --expires must be positive")
	}
	parsed, err := auth.ParseScopes(scopes)
	if err != nil {
		return err
	}
	store, closeStore, err := db.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeStore()
	proj, err := store.ProjectByName(ctx, project)
	if err != nil {
		return fmt.Errorf("project %q: %w", project, err)
	}
	nk := auth.NewKey{ProjectID: proj.ID, Name: name, Scopes: parsed}
	if expires > 0 {
		at := time.Now().Add(expires)
		nk.ExpiresAt = &at
	}
	k, secret, err := store.CreateKey(ctx, nk)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "key:\t%s\n", secret)
	fmt.Fprintf(tw, "id:\t%s\n", k.ID)
	fmt.Fprintf(tw, "project:\t%s\n", k.ProjectName)
	fmt.Fprintf(tw, "name:\t%s\n", k.Name)
	fmt.Fprintf(tw, "prefix:\t%s\n", k.Prefix)
	fmt.Fprintf(tw, "scopes:\t%s\n", strings.Join(k.Scopes.Strings(), " "))
	fmt.Fprintf(tw, "expires:\t%s\n", formatTime(k.ExpiresAt, "never"))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "This key will not be shown again: store it now. Send it as 'Authorization: Bearer <key>'.")
	return nil
}

func formatTime(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

func runKeysList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newEnvFlags("keys list", getenv, stderr)
	var db keyStoreFlags
	db.add(f)
	var project string
	f.fs.StringVar(&project, "project", "", "list only this project's keys (default: every project's)")
	if err := f.parse(args); err != nil {
		return err
	}
	store, closeStore, err := db.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeStore()
	projectID, all := uuid.Nil, project == ""
	if !all {
		proj, err := store.ProjectByName(ctx, project)
		if err != nil {
			return fmt.Errorf("project %q: %w", project, err)
		}
		projectID = proj.ID
	}
	keys, err := store.Keys(ctx, projectID, all)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROJECT\tNAME\tPREFIX\tSCOPES\tSTATE\tCREATED\tEXPIRES\tLAST USED")
	for _, k := range keys {
		state := "active"
		switch {
		case k.RevokedAt != nil:
			state = "revoked"
		case !k.Active(now):
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.ProjectName, k.Name, k.Prefix,
			strings.Join(k.Scopes.Strings(), ","), state, formatTime(&k.CreatedAt, ""), formatTime(k.ExpiresAt, "never"),
			formatTime(k.LastUsedAt, "never"))
	}
	return tw.Flush()
}

func runKeysRevoke(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newEnvFlags("keys revoke", getenv, stderr)
	var db keyStoreFlags
	db.add(f)
	if err := f.parse(args); err != nil {
		return err
	}
	if f.fs.NArg() != 1 {
		fmt.Fprint(stderr, keysUsage)
		return errUsage
	}
	id, err := uuid.Parse(f.fs.Arg(0))
	if err != nil {
		return fmt.Errorf("keys revoke: %q is not a key id (see 'switchboard keys list')", f.fs.Arg(0))
	}
	store, closeStore, err := db.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := store.RevokeKey(ctx, auth.DefaultProject, id, true); err != nil {
		return fmt.Errorf("revoke key %s: %w", id, err)
	}
	fmt.Fprintf(stdout, "revoked key %s (running gateways stop accepting it within 10 seconds)\n", id)
	return nil
}

func runProjectsCreate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newEnvFlags("projects create", getenv, stderr)
	var db keyStoreFlags
	db.add(f)
	if err := f.parse(args); err != nil {
		return err
	}
	if f.fs.NArg() != 1 {
		fmt.Fprint(stderr, projectsUsage)
		return errUsage
	}
	name := f.fs.Arg(0)
	if err := auth.ValidProjectName(name); err != nil {
		return err
	}
	store, closeStore, err := db.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeStore()
	p, err := store.CreateProject(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created project %s (id %s)\n", p.Name, p.ID)
	return nil
}

func runProjectsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newEnvFlags("projects list", getenv, stderr)
	var db keyStoreFlags
	db.add(f)
	if err := f.parse(args); err != nil {
		return err
	}
	store, closeStore, err := db.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeStore()
	projects, err := store.Projects(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED")
	for _, p := range projects {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.ID, p.Name, formatTime(&p.CreatedAt, ""))
	}
	return tw.Flush()
}
