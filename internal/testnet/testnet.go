// Package testnet holds network helpers for tests.
package testnet

import "testing"

// RefusedURL returns http:// and RefusedAddr's address.
func RefusedURL(t testing.TB) string { return "http://" + RefusedAddr(t) }
