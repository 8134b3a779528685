package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBlackBoxTestsLeftOutOfFuzzing: every black-box test file of this
// package is built only without the fuzzing tag, with which .ci/run and
// make fuzz build the fuzz targets. Those files bring in the stores
// (SQLite's generated C, pgx) and the OpenAPI validator, and a fuzz
// build instruments every package it holds: one file without the
// constraint makes the first fuzz build minutes longer.
func TestBlackBoxTestsLeftOutOfFuzzing(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	blackBox := 0
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains("\n"+string(src), "\npackage server_test\n") {
			continue
		}
		blackBox++
		if !strings.HasPrefix(string(src), "//go:build !fuzzing\n") {
			t.Errorf("%s is a black-box test without the constraint //go:build !fuzzing on its first line", name)
		}
	}
	if blackBox == 0 {
		t.Fatal("found no black-box test file: is the test running in the package's folder?")
	}
}
