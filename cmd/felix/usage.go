package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

func usageCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "usage", "[--key "+keyArg+"] [--since TIME] [--until TIME] [--outcome O] [--limit N] [--csv | --json]",
		"Print the usage log, newest first: one row per admitted call.", []string{"DATABASE_URL", "AUTO_MIGRATE"})
	key := fs.String("key", "", "only this key's calls (id, display prefix or full key)")
	since := fs.String("since", "", "only calls started at or after this RFC 3339 time or date")
	until := fs.String("until", "", "only calls started before this RFC 3339 time or date")
	outcome := fs.String("outcome", "", "only calls with this outcome: success, failed or open")
	limit := fs.Int("limit", 100, "how many calls at most (0 for all)")
	asCSV := fs.Bool("csv", false, "print CSV (the columns of GET /api/usage.csv)")
	asJSON := fs.Bool("json", false, "print JSON, one call per line")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errors.Join(errUsage, fmt.Errorf("felix usage takes no arguments, got %q", fs.Arg(0)))
	}
	f := quota.CallFilter{Outcome: *outcome, Limit: max(*limit, 0)}
	switch f.Outcome {
	case "", quota.OutcomeSuccess, quota.OutcomeFailed, quota.OutcomeOpen:
	default:
		return fmt.Errorf("--outcome %q is not success, failed or open", f.Outcome)
	}
	for _, t := range []struct {
		flag string
		dst  **time.Time
	}{{*since, &f.From}, {*until, &f.To}} {
		if t.flag != "" {
			v, err := parseTime(t.flag)
			if err != nil {
				return err
			}
			*t.dst = &v
		}
	}
	svc, closeStore, err := openService(ctx, e)
	if err != nil {
		return err
	}
	defer closeStore()
	if *key != "" {
		k, err := keysCtx{svc: svc}.resolve(ctx, *key)
		if err != nil {
			return err
		}
		f.KeyID = k.ID
	}
	switch {
	case *asCSV:
		w := csv.NewWriter(e.stdout)
		w.Write(quota.CallColumns)
		err = svc.Calls(ctx, f, func(c quota.Call) error { return w.Write(c.Record()) })
		w.Flush()
		return errors.Join(err, w.Error())
	case *asJSON:
		return svc.Calls(ctx, f, func(c quota.Call) error { return writeLine(e, c) })
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tSTARTED\tOUTCOME\tSTATUS\tLATENCY MS\tCOST\tTARGET\tREQUEST ID")
	err = svc.Calls(ctx, f, func(c quota.Call) error {
		r := c.Record()
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r[0], c.KeyPrefix+"…", r[4], r[6], r[7], r[8], r[10], r[11], r[3])
		return err
	})
	return errors.Join(err, tw.Flush())
}

func writeLine(e env, v any) error { return json.NewEncoder(e.stdout).Encode(v) }

func booksCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "books", "",
		"Check the books from the store alone: for every key, the sum of its events minus the units it used is its\n"+
			"remaining calls, and its daily history adds up to its successful calls; the site's daily history adds up\n"+
			"to every key's successful calls. Prints each discrepancy and exits 1 if there is any.", []string{"DATABASE_URL", "AUTO_MIGRATE"})
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	svc, closeStore, err := openService(ctx, e)
	if err != nil {
		return err
	}
	defer closeStore()
	bad, err := svc.Books(ctx)
	if err != nil {
		return err
	}
	for _, d := range bad {
		fmt.Fprintln(e.stdout, d)
	}
	if len(bad) > 0 {
		return fmt.Errorf("the books do not balance: %d discrepancies", len(bad))
	}
	fmt.Fprintln(e.stdout, "the books balance")
	return nil
}
