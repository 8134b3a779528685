package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/felix-gateway/felix/internal/quota"
)

// Explain turns an error of Open, Migrate or Writable into one clause an
// operator can act on: what the database said and what to change. It is
// one line however many hosts were tried, says each thing once, and never
// holds a password (pgx's messages name the user and database, never the
// password).
func Explain(err error) string {
	if err == nil {
		return ""
	}
	err = readOnly(err)
	var (
		connErr *pgconn.ConnectError
		pgErr   *pgconn.PgError
		liteErr *sqlite.Error
		pathErr *fs.PathError
	)
	switch {
	case errors.As(err, &connErr):
		return explainConnect(connErr)
	case errors.Is(err, quota.ErrReadOnly) && errors.As(err, &liteErr):
		return "the SQLite file is read-only; make it, its -wal and -shm files and its folder writable by the user Felix runs as"
	case errors.Is(err, quota.ErrReadOnly):
		return readOnlyAdvice
	case errors.As(err, &pgErr):
		return "PostgreSQL refused a statement: " + pgMessage(pgErr)
	case errors.As(err, &liteErr):
		return explainSQLite(liteErr)
	case errors.Is(err, errDiskFull):
		return "the disk holding the SQLite file is full; free some space"
	case errors.As(err, &pathErr):
		return fmt.Sprintf("cannot %s %s (%v); check the path, and that the user Felix runs as may write there", pathErr.Op, pathErr.Path, pathErr.Err)
	case errors.Is(err, context.DeadlineExceeded):
		return "the database did not answer in time"
	}
	return oneLine(err.Error())
}

const readOnlyAdvice = "the PostgreSQL server is read-only (a standby, or default_transaction_read_only is on); " +
	"point DATABASE_URL at the primary, or list every server and add target_session_attrs=read-write " +
	"(postgres://user@host1:5432,host2:5432/felix?target_session_attrs=read-write) so that Felix connects to the writable one"

// explainConnect describes a failed connection: the first server error
// that ends the attempt (a wrong role, password or database), else what
// each host said.
func explainConnect(e *pgconn.ConnectError) string {
	var pgErr *pgconn.PgError
	if errors.As(e, &pgErr) {
		advice := ""
		switch pgErr.Code {
		case "28000", "28P01": // invalid_authorization_specification, invalid_password
			advice = "; check the user and password in DATABASE_URL, and pg_hba.conf"
		case "3D000": // invalid_catalog_name
			advice = "; create the database, or fix its name in DATABASE_URL"
		case "42501": // insufficient_privilege
			advice = "; grant the user CONNECT on the database"
		case "57P03": // cannot_connect_now
			advice = "; the server is starting, stopping or recovering: retry in a moment"
		case "53300": // too_many_connections
			advice = "; raise max_connections, or run fewer instances"
		}
		return "PostgreSQL refused the connection: " + pgMessage(pgErr) + advice
	}
	var hosts []string
	readOnly, timedOut := false, false
	for _, h := range leaves(errors.Unwrap(e)) {
		addr, _, _ := strings.Cut(h.Error(), " ")
		var opErr *net.OpError
		var dnsErr *net.DNSError
		switch {
		case errors.Is(h, pgconn.ErrReadOnlyConnection):
			readOnly = true
			hosts = append(hosts, addr+" is read-only")
		case errors.Is(h, context.DeadlineExceeded) || pgconn.Timeout(h):
			timedOut = true
			hosts = append(hosts, addr+" did not answer in time")
		case errors.As(h, &dnsErr):
			hosts = append(hosts, fmt.Sprintf("host %s not found", dnsErr.Name))
		case errors.As(h, &opErr) && opErr.Err != nil:
			hosts = append(hosts, addr+": "+lastClause(opErr.Err.Error()))
		default:
			hosts = append(hosts, oneLine(h.Error()))
		}
	}
	msg := "cannot connect to PostgreSQL (" + strings.Join(hosts, "; ") + ")"
	switch {
	case readOnly:
		return msg + "; no server listed accepts writes (target_session_attrs=read-write); promote a standby, or wait for the failover to finish"
	case timedOut:
		return msg + "; check the hosts and ports in DATABASE_URL, and that nothing between Felix and PostgreSQL drops packets"
	}
	return msg + "; check the hosts and ports in DATABASE_URL, and that PostgreSQL is running"
}

// leaves lists the errors a join holds (each host's, for pgx), or err.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func pgMessage(e *pgconn.PgError) string {
	return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code)
}

func explainSQLite(e *sqlite.Error) string {
	switch e.Code() & 0xff {
	case sqlite3.SQLITE_BUSY:
		return "another process holds the SQLite file's write lock; find it (a backup, a script, another Felix) and let it finish"
	case sqlite3.SQLITE_FULL:
		return "the disk holding the SQLite file is full; free some space"
	case sqlite3.SQLITE_CANTOPEN:
		return "cannot open the SQLite file; check that its folder exists and is writable by the user Felix runs as"
	}
	return "SQLite: " + oneLine(e.Error())
}

// lastClause keeps what follows the last ": " (e.g. "connection refused"
// of "dial tcp 127.0.0.1:5: connect: connection refused").
func lastClause(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
