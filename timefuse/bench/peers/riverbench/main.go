// Command riverbench is River's side of `timefuse bench river`: it migrates River's schema
// into a database, inserts N jobs available at once, then runs a River client whose worker
// POSTs each job's body to one URL, and prints one JSON object once every job is completed:
// the drain time and rate, the CPU the process used while draining, and its peak RSS. It
// prints the line "draining" just before it starts the client.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

type PostArgs struct {
	URL  string          `json:"url"`
	Body json.RawMessage `json:"body"`
}

func (PostArgs) Kind() string { return "post_webhook" }

type PostWorker struct {
	river.WorkerDefaults[PostArgs]
	client   *http.Client
	worked   atomic.Int64
	lastDone atomic.Int64 // unix nanoseconds of the latest successful POST
}

func (w *PostWorker) Work(ctx context.Context, job *river.Job[PostArgs]) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, job.Args.URL, bytes.NewReader(job.Args.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", "river-"+strconv.FormatInt(job.ID, 10))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("POST answered %d", resp.StatusCode)
	}
	w.worked.Add(1)
	w.lastDone.Store(time.Now().UnixNano())
	return nil
}

type result struct {
	River          string  `json:"river_version"`
	Jobs           int     `json:"jobs"`
	Workers        int     `json:"workers"`
	FetchCooldownS float64 `json:"fetch_cooldown_s"`
	InsertSeconds  float64 `json:"insert_s"`
	StartedUnix    float64 `json:"started_unix"`
	LastPostUnix   float64 `json:"last_post_unix"`
	CompletedUnix  float64 `json:"completed_unix"`
	DrainSeconds   float64 `json:"drain_s"`
	RatePerS       float64 `json:"drain_rate_per_s"`
	Completed      int     `json:"completed"`
	FailedAttempts int     `json:"failed_attempts"`
	CPUSeconds     float64 `json:"cpu_s"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	Error          string  `json:"error,omitempty"`
}

func usage() syscall.Rusage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru
}

func cpuSeconds(ru syscall.Rusage) float64 {
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// peakRSSMB is VmHWM from /proc/self/status. Not getrusage's ru_maxrss: that survives execve,
// so a child of a large parent would report the parent's resident set.
func peakRSSMB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func riverVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/riverqueue/river" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

type options struct {
	databaseURL   string
	url           string
	jobs          int
	workers       int
	fetchCooldown time.Duration
	fetchPoll     time.Duration
	poolConns     int
	run           string
	timeout       time.Duration
}

func parse() options {
	var o options
	flag.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL database River's tables go into")
	flag.StringVar(&o.url, "url", "", "where each job POSTs its body")
	flag.IntVar(&o.jobs, "jobs", 20000, "jobs inserted, all available at once")
	flag.IntVar(&o.workers, "workers", 100, "MaxWorkers of the queue")
	flag.DurationVar(&o.fetchCooldown, "fetch-cooldown", time.Millisecond, "Config.FetchCooldown (0: River's default)")
	flag.DurationVar(&o.fetchPoll, "fetch-poll-interval", 0, "Config.FetchPollInterval (0: River's default)")
	flag.IntVar(&o.poolConns, "pool-conns", 0, "pgxpool MaxConns (0: pgx's default)")
	flag.StringVar(&o.run, "run", "river", "run id written into each job's body")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up when the jobs are not all completed by then")
	flag.Parse()
	if o.databaseURL == "" || o.url == "" || o.jobs < 1 || o.workers < 1 {
		fmt.Fprintln(os.Stderr, "riverbench: -database-url, -url, -jobs >= 1 and -workers >= 1 are required")
		os.Exit(2)
	}
	return o
}

func main() {
	o := parse()
	out, err := bench(context.Background(), o)
	if err != nil {
		out.Error = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	if err != nil {
		os.Exit(1)
	}
}

func bench(ctx context.Context, o options) (result, error) {
	out := result{River: riverVersion(), Jobs: o.jobs, Workers: o.workers}
	out.FetchCooldownS = cmp.Or(o.fetchCooldown, river.FetchCooldownDefault).Seconds()
	config, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return out, err
	}
	if o.poolConns > 0 {
		config.MaxConns = int32(o.poolConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		return out, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return out, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return out, fmt.Errorf("migrating River's schema: %w", err)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = o.workers
	transport.MaxIdleConnsPerHost = o.workers
	worker := &PostWorker{client: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
	workers := river.NewWorkers()
	river.AddWorker(workers, worker)
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.workers}},
		FetchCooldown:     o.fetchCooldown,
		FetchPollInterval: o.fetchPoll,
		Workers:           workers,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return out, err
	}

	inserted := time.Now()
	if err := insert(ctx, client, o); err != nil {
		return out, fmt.Errorf("inserting jobs: %w", err)
	}
	out.InsertSeconds = time.Since(inserted).Seconds()

	// Every completion is awaited, so the channel holds them all: River drops events that
	// overflow a subscriber's buffer.
	events, cancel := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: o.jobs + 1024,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed},
	})
	defer cancel()

	// The harness samples the database server's CPU when it reads this line.
	fmt.Println("draining")
	before := usage()
	started := time.Now()
	if err := client.Start(ctx); err != nil {
		return out, err
	}
	deadline := time.After(o.timeout)
	var waitErr error
wait:
	for out.Completed < o.jobs {
		select {
		case event := <-events:
			if event.Kind == river.EventKindJobCompleted {
				out.Completed++
			} else {
				out.FailedAttempts++
			}
		case <-deadline:
			waitErr = errors.New("timed out before every job completed")
			break wait
		}
	}
	completed := time.Now()
	after := usage()

	out.StartedUnix = unix(started)
	out.CompletedUnix = unix(completed)
	out.LastPostUnix = float64(worker.lastDone.Load()) / 1e9
	out.DrainSeconds = completed.Sub(started).Seconds()
	out.RatePerS = float64(out.Completed) / out.DrainSeconds
	out.CPUSeconds = cpuSeconds(after) - cpuSeconds(before)
	out.PeakRSSMB = peakRSSMB()

	stopCtx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	if err := client.Stop(stopCtx); err != nil && waitErr == nil {
		fmt.Fprintln(os.Stderr, "riverbench: stopping the client:", err)
	}
	return out, waitErr
}

func insert(ctx context.Context, client *river.Client[pgx.Tx], o options) error {
	pad := string(bytes.Repeat([]byte("x"), 200))
	const chunk = 5000
	for start := 0; start < o.jobs; start += chunk {
		end := min(start+chunk, o.jobs)
		params := make([]river.InsertManyParams, 0, end-start)
		for i := start; i < end; i++ {
			body, _ := json.Marshal(map[string]any{"run": o.run, "seq": i, "pad": pad})
			params = append(params, river.InsertManyParams{Args: PostArgs{URL: o.url, Body: body}})
		}
		if _, err := client.InsertManyFast(ctx, params); err != nil {
			return err
		}
	}
	return nil
}
