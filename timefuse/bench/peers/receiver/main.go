// Command receiver is the webhook receiver of `timefuse bench river`: a net/http server that
// answers 200 to every POST and counts requests and distinct webhook-id headers, so the bench
// can check that every delivery arrived exactly once.
//
// It prints its port on the first line of stdout and exits when stdin closes. Endpoints:
// GET /stats (requests, distinct ids, connections that delivered, first and last arrival,
// all since the last reset), GET /ids (the distinct ids, one a line), POST /reset (forget
// everything). Every other POST is a delivery.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type counts struct {
	mu        sync.Mutex
	requests  int64
	withoutID int64
	seen      map[string]struct{}
	// Client addresses that delivered: connections used, to tell reuse from churn.
	peers map[string]struct{}
	first time.Time
	last  time.Time
}

func newCounts() *counts {
	return &counts{seen: make(map[string]struct{}, 1<<16), peers: make(map[string]struct{})}
}

func (c *counts) record(id, peer string, at time.Time) {
	c.mu.Lock()
	c.requests++
	c.peers[peer] = struct{}{}
	if id == "" {
		c.withoutID++
	} else {
		c.seen[id] = struct{}{}
	}
	if c.first.IsZero() {
		c.first = at
	}
	c.last = at
	c.mu.Unlock()
}

type stats struct {
	Conns      int      `json:"connections"`
	Requests   int64    `json:"requests"`
	Distinct   int      `json:"distinct"`
	Duplicates int64    `json:"duplicates"`
	WithoutID  int64    `json:"without_id"`
	FirstUnix  *float64 `json:"first_unix"`
	LastUnix   *float64 `json:"last_unix"`
}

func unix(t time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	v := float64(t.UnixNano()) / 1e9
	return &v
}

func (c *counts) snapshot() stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	distinct := len(c.seen)
	return stats{
		Conns:      len(c.peers),
		Requests:   c.requests,
		Distinct:   distinct,
		Duplicates: c.requests - c.withoutID - int64(distinct),
		WithoutID:  c.withoutID,
		FirstUnix:  unix(c.first),
		LastUnix:   unix(c.last),
	}
}

func (c *counts) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.seen))
	for id := range c.seen {
		out = append(out, id)
	}
	return out
}

func (c *counts) reset() {
	c.mu.Lock()
	c.requests, c.withoutID = 0, 0
	c.seen = make(map[string]struct{}, 1<<16)
	c.peers = make(map[string]struct{})
	c.first, c.last = time.Time{}, time.Time{}
	c.mu.Unlock()
}

func handler(c *counts) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/stats":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(c.snapshot())
		case r.Method == http.MethodGet && r.URL.Path == "/ids":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, strings.Join(c.ids(), "\n"))
		case r.Method == http.MethodPost && r.URL.Path == "/reset":
			c.reset()
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodPost:
			// Read the whole body so the connection can be reused.
			_, _ = io.Copy(io.Discard, r.Body)
			c.record(r.Header.Get("webhook-id"), r.RemoteAddr, time.Now())
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	}
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	flag.Parse()
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, "0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	go func() {
		// The parent holds stdin open; when it goes, so does the receiver.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	server := &http.Server{Handler: handler(newCounts()), ReadHeaderTimeout: 10 * time.Second}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
}
