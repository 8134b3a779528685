// Package e2e tests Felix as real processes: crashes, several instances, shutdown.
package e2e
