package target

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// RunHealth probes every target now and then every health interval until
// ctx ends. Without a health path it returns at once.
func (p *Pool) RunHealth(ctx context.Context) {
	if len(p.targets) == 0 || p.targets[0].health == nil {
		return
	}
	for {
		// The next round is due an interval after this one starts, however
		// long its probes take (at most the interval).
		tick := make(chan struct{})
		stop := p.clock.AfterFunc(p.healthInterval, func() { close(tick) })
		p.Probe(ctx)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-tick:
		}
	}
}

// Probe checks every target once, all at the same time: a 2xx answer to
// GET the health path within the health interval marks a target up at
// once (ending its cooldown); anything else marks it down until a probe
// succeeds. It returns when every probe has ended.
func (p *Pool) Probe(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range p.targets {
		if t.health != nil {
			wg.Go(func() { p.probe(ctx, t) })
		}
	}
	wg.Wait()
}

func (p *Pool) probe(ctx context.Context, t *Target) {
	problem := p.check(ctx, t)
	if ctx.Err() != nil {
		return // stopping: the answer says nothing about the target
	}
	p.mu.Lock()
	now := p.clock.Now()
	was := t.up(now)
	if problem == "" {
		t.probeDown, t.downUntil = false, now
	} else {
		t.probeDown, t.lastError = true, problem
	}
	p.dispatch(now)
	p.mu.Unlock()
	switch {
	case problem == "" && !was:
		p.log.Info("target is up: its health check answered", "target", t.name)
	case problem != "" && was:
		p.log.Warn("target is down: its health check failed", "target", t.name, "problem", problem)
	}
}

// check sends one probe and returns "" when it answered 2xx in time, else
// a sentence saying what went wrong.
func (p *Pool) check(ctx context.Context, t *Target) string {
	ctx, cancel := context.WithTimeout(ctx, p.healthInterval)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.health.String(), nil)
	if err != nil {
		return fmt.Sprintf("the health check %s cannot be sent: %v", t.health.Path, err)
	}
	for name, values := range p.healthHeader {
		req.Header[name] = values
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Sprintf("the health check %s got no answer within %s: %s", t.health.Path, p.healthInterval, describe(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Sprintf("the health check %s answered %d, not 2xx", t.health.Path, resp.StatusCode)
	}
	return ""
}

// describe turns the error of a call that got no answer into a sentence
// for /api/targets, with the cause in brackets.
func describe(err error) string {
	if err == nil {
		return "no answer"
	}
	var ne net.Error
	var what string
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		what = "the connection was refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		what = "the connection was closed before an answer"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		what = "no answer before the timeout"
	default:
		what = "no answer"
	}
	return what + " (" + err.Error() + ")"
}
