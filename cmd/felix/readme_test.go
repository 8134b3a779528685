package main

import (
	"os"
	"strings"
	"testing"

	"github.com/felix-gateway/felix/internal/config"
)

// variableTables are the files whose tables document config.Vars: the
// README has the few most installations need, docs/configuration.md the rest.
var variableTables = []string{"../../README.md", "../../docs/configuration.md"}

// TestDocsListEveryVariable keeps the configuration tables honest: every
// variable Felix reads is the first cell of exactly one table row.
func TestDocsListEveryVariable(t *testing.T) {
	rows := map[string][]string{} // variable → files whose table lists it
	for _, file := range variableTables {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(text), "\n") {
			cells := strings.Split(line, "|")
			if !strings.HasPrefix(line, "|") || len(cells) < 3 {
				continue
			}
			for _, v := range config.Vars {
				if strings.Contains(cells[1], "`"+v.Name+"`") {
					rows[v.Name] = append(rows[v.Name], file)
				}
			}
		}
	}
	for _, v := range config.Vars {
		if got := rows[v.Name]; len(got) != 1 {
			t.Errorf("%s is in the variable tables of %v; want exactly one of %v", v.Name, got, variableTables)
		}
	}
}
