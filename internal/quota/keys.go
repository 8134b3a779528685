package quota

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"unicode/utf8"
)

// KeyPrefix starts every key that Felix generates.
const KeyPrefix = "fx_"

// MaxKeyLen is the longest API key Felix accepts, in bytes.
const MaxKeyLen = 256

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Secret is an API key, admin token or target key in plaintext. It prints
// and logs only as a masked prefix, so it cannot leak by accident.
type Secret string

// String returns the masked form.
func (s Secret) String() string { return Mask(string(s)) }

// LogValue masks the secret in structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Mask(string(s))) }

// GenerateKey returns a new key: "fx_" followed by 32 base62 characters
// from crypto/rand (about 190 bits).
func GenerateKey() (string, error) {
	const n = 32
	out := make([]byte, 0, len(KeyPrefix)+n)
	out = append(out, KeyPrefix...)
	var buf [64]byte
	for len(out) < cap(out) {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("quota: generate key: %w", err)
		}
		for _, b := range buf {
			// 248 = 4*62: rejecting larger bytes keeps every character equally likely.
			if b < 248 && len(out) < cap(out) {
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out), nil
}

// HashKey returns the hex SHA-256 of a key: the only form stored.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// DisplayPrefix returns the part of a key that may be shown again after
// creation: at most 7 bytes and never more than a third of the key.
func DisplayPrefix(key string) string {
	n := min(7, len(key)/3)
	for n > 0 && !utf8.RuneStart(key[n]) {
		n--
	}
	return key[:n]
}

// Mask returns the display prefix followed by "…".
func Mask(key string) string { return DisplayPrefix(key) + "…" }

// ValidateKey reports why a client-supplied key is unacceptable, or nil.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: API key is empty", ErrInvalidKeyFormat)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: API key is longer than %d bytes", ErrInvalidKeyFormat, MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: API key is not valid UTF-8", ErrInvalidKeyFormat)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: API key contains a control character", ErrInvalidKeyFormat)
		}
	}
	return nil
}
