package testnet_test

import (
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"

	"github.com/felix-gateway/felix/internal/testnet"
)

// TestRefusedAddr: a connection to the address is refused, and while the
// test runs no listener can take its port.
func TestRefusedAddr(t *testing.T) {
	addr := testnet.RefusedAddr(t)
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if runtime.GOOS != "linux" {
		return // elsewhere the port is not reserved
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listened on %s while it was reserved", addr)
	}
}
