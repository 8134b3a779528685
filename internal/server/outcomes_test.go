//go:build !fuzzing

package server_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/felix-gateway/felix/internal/server"
)

// notGenerate are the codes of the admin API and the router, which a
// POST /api/generate never answers.
var notGenerate = []string{
	"admin_required", "admin_disabled", "too_many_attempts", "key_not_found", "key_exists",
	"insufficient_calls", "not_found", "method_not_allowed",
}

// TestOutcomesComplete: every error code the server's code can answer
// (errorf's code) and every outcome it names (setOutcome) is in
// server.Outcomes, unless only the admin API or the router answers it:
// the metrics' outcome label is a closed list, and a code missing from it
// would be counted as "other".
func TestOutcomesComplete(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			fn, ok := call.Fun.(*ast.Ident)
			if !ok || fn.Name != "errorf" && fn.Name != "setOutcome" {
				return true
			}
			lit, ok := call.Args[1].(*ast.BasicLit)
			if sel, isSel := call.Args[1].(*ast.SelectorExpr); fn.Name == "setOutcome" && isSel && sel.Sel.Name == "code" {
				return true // an apiError's code: its errorf is checked
			}
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: %s with a code that is not a string literal: the test cannot check it", fset.Position(call.Pos()), fn.Name)
				return true
			}
			code, _ := strconv.Unquote(lit.Value)
			found++
			if !slices.Contains(server.Outcomes, code) && !slices.Contains(notGenerate, code) {
				t.Errorf("%s: %q is not in server.Outcomes (nor an admin-only code)", fset.Position(call.Pos()), code)
			}
			return true
		})
	}
	if found < 10 {
		t.Fatalf("found %d codes in the server's source, want many: the test does not see them", found)
	}
}
