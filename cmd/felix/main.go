// Command felix is an API gateway for image-generation backends: it checks
// each client key's quota, forwards the call, streams the answer back and
// counts every call exactly. This package only parses the command line and
// wires the internal packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	_ "time/tzdata" // STATS_TIMEZONE works on machines without a zone database
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "felix:", err)
		os.Exit(1)
	}
}

// errUsage means the usage was printed already.
var errUsage = errors.New("usage")

// env is what a command may see of the process.
type env struct {
	lookup func(string) (string, bool)
	stdout io.Writer
	stderr io.Writer
	dir    string // where .env files are read
}

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, e env, args []string) error
}

var commands = []command{
	{"serve", "[--addr host:port] [--no-migrate]", "run the gateway (the long-running command)", serveCmd},
	{"demo", "[--addr host:port]", "run Felix with zero configuration: SQLite in a temp dir, a built-in image generator, a printed admin token and demo key", demoCmd},
	{"migrate", "", "apply the database migrations embedded in the binary, then exit", migrateCmd},
	{"keys", "list|show|create|topup|set|disable|enable|expire|delete|events …", "manage API keys directly in the database", keysCmd},
	{"usage", "[--key K] [--since T] [--csv]", "print the usage log: one row per admitted call", usageCmd},
	{"stats", "[--days N]", "print site statistics (total and per-day generations)", statsCmd},
	{"books", "", "check the books from the store alone; exits 1 on any discrepancy", booksCmd},
	{"version", "", "print the version", versionCmd},
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	return dispatch(ctx, env{lookup: lookup, stdout: stdout, stderr: stderr, dir: "."}, args)
}

// dispatch runs the command args name.
func dispatch(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stdout)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	usage(e.stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Felix: an API gateway that rations and counts calls to an image-generation API.\n\nUsage: felix <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'felix <command> --help' for a command's flags and environment variables.\nQuick start: felix demo\n")
}

// newFlags returns a flag set whose --help also lists the environment
// variables the command reads.
func newFlags(e env, name, args, summary string, vars []string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: felix %s %s\n\n%s\n", name, args, summary)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
		if len(vars) > 0 {
			fmt.Fprintf(w, "\nEnvironment (also read from .env.local and .env; the real environment wins):\n")
			printVars(w, vars)
		}
	}
	return fs
}

func versionCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "version", "", "Print Felix's version and build.", nil)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "felix", version())
	return nil
}

// version describes the build from the module and VCS information.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := []string{info.Main.Version}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v = append(v, s.Value[:12])
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v = append(v, "dirty")
		}
	}
	return strings.Join(append(v, info.GoVersion), " ")
}
