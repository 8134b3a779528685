//go:build !linux

package testnet

import (
	"net"
	"testing"
)

// RefusedAddr returns a loopback TCP address nothing listens on: a port
// that was free a moment ago. (On Linux the port stays reserved until the
// test ends; here another listener could take it meanwhile.)
func RefusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
