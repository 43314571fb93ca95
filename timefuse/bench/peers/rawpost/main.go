// Command rawpost is the physical ceiling of `timefuse bench river`: N goroutines POSTing a
// small JSON body to one URL, M requests in all, over kept-alive connections. It prints one
// JSON object: the rate, the errors and the CPU it used.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	Requests    int64   `json:"requests"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	RatePerS    float64 `json:"rate_per_s"`
	Errors      int64   `json:"errors"`
	CPUSeconds  float64 `json:"cpu_s"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
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

func main() {
	url := flag.String("url", "", "where to POST")
	requests := flag.Int64("requests", 20000, "requests in all")
	concurrency := flag.Int("concurrency", 100, "goroutines POSTing at once")
	warmup := flag.Int64("warmup", 1000, "requests sent first, not measured (opens the connections)")
	prefix := flag.String("id-prefix", "raw", "webhook-id of request i is <prefix>-i")
	flag.Parse()
	if *url == "" || *requests < 1 || *concurrency < 1 {
		fmt.Fprintln(os.Stderr, "rawpost: -url, -requests >= 1 and -concurrency >= 1 are required")
		os.Exit(2)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = *concurrency
	transport.MaxIdleConnsPerHost = *concurrency
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	body := []byte(`{"run":"raw","seq":0,"pad":"` + string(bytes.Repeat([]byte("x"), 200)) + `"}`)

	var errors int64
	run := func(count int64, prefix string) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < *concurrency; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= count {
						return
					}
					req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("webhook-id", prefix+"-"+strconv.FormatInt(i, 10))
					resp, err := client.Do(req)
					if err != nil {
						atomic.AddInt64(&errors, 1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode >= 300 {
						atomic.AddInt64(&errors, 1)
					}
				}
			}()
		}
		wg.Wait()
	}
	if *warmup > 0 {
		run(*warmup, *prefix+"-warmup")
	}
	errors = 0
	cpu := cpuSeconds()
	started := time.Now()
	run(*requests, *prefix)
	seconds := time.Since(started).Seconds()
	out := result{
		Requests:    *requests,
		Concurrency: *concurrency,
		Seconds:     seconds,
		RatePerS:    float64(*requests) / seconds,
		Errors:      errors,
		CPUSeconds:  cpuSeconds() - cpu,
		PeakRSSMB:   peakRSSMB(),
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
