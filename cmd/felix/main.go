// Command felix is an API gateway for image-generation backends: it checks
// each client key's quota, forwards the call, streams the answer back and
// counts every call exactly. This package only parses the command line and
// wires the internal packages together.
package main

import (
	"bytes"
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
	code := exitCode(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage means the usage was printed already, to stderr.
var errUsage = errors.New("usage")

// exitCode prints err unless it was printed already and returns the
// process's exit status: 0 for success and --help, 2 for a usage error, 1
// for any other failure.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "felix:", err)
	return 1
}

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
	if len(args) == 0 {
		usage(e.stderr)
		return errUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stdout)
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "felix: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return errUsage
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

// parseFlags parses a command's flags: --help prints its usage to stdout
// (flag.ErrHelp, exit 0); a bad flag prints the problem and the usage to
// stderr (errUsage, exit 2).
func parseFlags(e env, fs *flag.FlagSet, args []string) error {
	var out bytes.Buffer
	fs.SetOutput(&out)
	err := fs.Parse(args)
	fs.SetOutput(e.stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		out.WriteTo(e.stdout)
		return flag.ErrHelp
	case err != nil:
		out.WriteTo(e.stderr)
		return errUsage
	}
	return nil
}

func versionCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "version", "", "Print Felix's version and build.", nil)
	if err := parseFlags(e, fs, args); err != nil {
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
