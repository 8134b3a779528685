package testnet

import (
	"fmt"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback TCP address that refuses connections
// until the test ends: a socket is bound to it and never listens, so the
// kernel answers every connection attempt with a reset, and no other
// listener (of this test binary or of another one running in parallel)
// can take the port meanwhile, as it could a port closed right after
// net.Listen.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
