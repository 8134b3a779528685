package server

import "time"

// Observer records what the HTTP layer does, for metrics: cmd/felix
// passes Felix's metrics (internal/metrics). Its methods are called on the
// request path, concurrently, so they must be cheap.
type Observer interface {
	// Route is called once per route as the Server is built, with the
	// route's pattern ("unmatched" for requests no route takes,
	// "bad_framing" for those refused before routing); what it returns is
	// called once per request of that route as it ends.
	Route(pattern string) func(status int, elapsed time.Duration)
	// Generate is called once per POST /api/generate as it ends, with how
	// it ended: one of Outcomes.
	Generate(outcome string)
	// Target is called once per target as the Server is built, with its
	// base URL as configured; what it returns is called once per call sent
	// to that target, with the time until its status line arrived or the
	// call failed (not when the client left first).
	Target(url string) func(elapsed time.Duration)
}

// generateRoute is the pattern whose requests are counted by outcome.
const generateRoute = "POST /api/generate"

// unmatched and badFraming name, in metrics and logs, the requests no
// route takes and those refused for their framing before routing.
const (
	unmatched  = "unmatched"
	badFraming = "bad_framing"
)

// Outcomes are the ways a POST /api/generate can end, as the access log
// and the metrics name them: the call succeeded, the target answered
// non-2xx, the client left, the answer was cut, or Felix answered one of
// its error codes. The list is closed (a test checks that every code the
// server can answer is in it), so the metrics' outcome label is bounded.
var Outcomes = []string{
	"success",             // the target answered 2xx and the call was charged
	"replayed",            // a repeated Idempotency-Key got the first answer again, not a call
	"target_error",        // the target answered non-2xx, passed through
	"client_gone",         // the client left before the answer ended
	"target_cut",          // the target's answer broke off mid-stream
	"target_idle_timeout", // the target's answer stalled mid-stream
	"aborted",             // the handler gave up mid-answer
	"invalid_request",
	"invalid_api_key",
	"key_disabled",
	"key_expired",
	"rate_limited",
	"concurrency_limited",
	"quota_exhausted",
	"request_in_progress",
	"already_succeeded",
	"idempotency_key_reused",
	"body_too_large",
	"request_timeout",
	"unsupported_encoding",
	"upstream_unreachable",
	"upstream_timeout",
	"store_unavailable",
	"store_read_only",
	"queue_full",
	"queue_timeout",
	"no_target_available",
	"target_not_configured",
	"internal_error",
}

type nopObserver struct{}

func (nopObserver) Route(string) func(int, time.Duration) { return func(int, time.Duration) {} }
func (nopObserver) Generate(string)                       {}
func (nopObserver) Target(string) func(time.Duration)     { return func(time.Duration) {} }
