// Command loadgen holds thousands of WebSocket connections to a Neurelay
// gateway, a python-socketio server or NATS's WebSocket listener, publishes
// at a controlled rate and measures what the subscribers receive.
//
// It reads one JSON configuration on stdin (written by `python -m bench`) and
// writes JSON lines on stdout: progress, set-up, one line per load step,
// storm and idle samples, and a final "done". `loadgen serve` runs a minimal
// Go fan-out server speaking the gateway's JSON protocol, used to measure the
// load generator's own ceiling.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type Stream struct {
	Channel string  `json:"channel"` // may hold {i}, for i in [0, count)
	Count   int     `json:"count"`
	Rate    float64 `json:"rate"` // messages per second, all publishers together
}

type Config struct {
	Mode     string   `json:"mode"` // traffic | storm | idle | members
	Protocol string   `json:"protocol"`
	URL      string   `json:"url"`
	URLs     []string `json:"urls"` // several servers: connection i goes to URLs[i % len]

	// One of several load generators sharing a load (an open-file limit below the
	// connections): its users start at UserOffset, the messages it publishes carry
	// Origin, and every process measures time from the same wall-clock Epoch.
	UserOffset  int            `json:"user_offset"`
	Origin      int            `json:"origin"`
	EpochMicros int64          `json:"epoch_unix_us"`
	Secret      string         `json:"secret"`
	NatsToken   string         `json:"nats_token"`
	Pids        map[string]int `json:"pids"`

	Subscribers        int      `json:"subscribers"`
	Channels           []string `json:"channels"` // per subscriber; {i} is its index, user u{i}
	Publishers         int      `json:"publishers"`
	ConnectConcurrency int      `json:"connect_concurrency"`
	PayloadBytes       int      `json:"payload_bytes"`

	Streams        []Stream `json:"streams"`
	StepSeconds    float64  `json:"step_seconds"`
	RampFactor     float64  `json:"ramp_factor"`
	MaxSteps       int      `json:"max_steps"`
	HalfStep       bool     `json:"half_step"`
	BreakdownP99Ms float64  `json:"breakdown_p99_ms"`
	BreakdownRatio float64  `json:"breakdown_ratio"`

	Batch         int     `json:"batch"`
	SettleSeconds float64 `json:"settle_seconds"`
	HoldSeconds   float64 `json:"hold_seconds"`
	TimeLimit     float64 `json:"time_limit_seconds"`

	Members *MembersConfig `json:"members"` // mode members (members.go)
}

var outMu sync.Mutex

func emit(event string, fields map[string]any) {
	fields["event"] = event
	data, _ := json.Marshal(fields)
	outMu.Lock()
	os.Stdout.Write(append(data, '\n'))
	outMu.Unlock()
}

func fatal(format string, args ...any) {
	emit("error", map[string]any{"message": fmt.Sprintf(format, args...)})
	os.Exit(1)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		serve(os.Args[2:])
		return
	}
	var cfg Config
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fatal("bad configuration: %v", err)
	}
	defaults(&cfg)
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{cfg.URL}
	}
	for _, url := range cfg.URLs {
		if !strings.HasPrefix(url, "ws://127.0.0.1:") && !strings.HasPrefix(url, "ws://localhost:") {
			fatal("refusing a target that is not on the loopback interface: %s", url)
		}
	}
	if cfg.TimeLimit > 0 {
		time.AfterFunc(time.Duration(cfg.TimeLimit*float64(time.Second)), func() {
			fatal("time limit of %.0f s reached", cfg.TimeLimit)
		})
	}
	emit("start", map[string]any{"gomaxprocs": runtime.GOMAXPROCS(0), "protocol": cfg.Protocol, "mode": cfg.Mode})
	switch cfg.Mode {
	case "traffic":
		traffic(&cfg)
	case "storm":
		storm(&cfg)
	case "idle":
		idle(&cfg)
	case "members":
		members(&cfg)
	default:
		fatal("unknown mode %q", cfg.Mode)
	}
}

func defaults(cfg *Config) {
	if cfg.ConnectConcurrency <= 0 {
		cfg.ConnectConcurrency = 64
	}
	if cfg.PayloadBytes <= 0 {
		cfg.PayloadBytes = 128
	}
	if cfg.Publishers <= 0 {
		cfg.Publishers = 1
	}
	if cfg.StepSeconds <= 0 {
		cfg.StepSeconds = 5
	}
	if cfg.RampFactor <= 1 {
		cfg.RampFactor = 1.5
	}
	if cfg.MaxSteps <= 0 {
		cfg.MaxSteps = 1
	}
	if cfg.MaxSteps > maxSteps-1 {
		cfg.MaxSteps = maxSteps - 1
	}
	if cfg.BreakdownP99Ms <= 0 {
		cfg.BreakdownP99Ms = 100
	}
	if cfg.BreakdownRatio <= 0 {
		cfg.BreakdownRatio = 0.9
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
}

// urlFor spreads connections over the servers: connection i goes to server i mod n.
func (cfg *Config) urlFor(i int) string { return cfg.URLs[i%len(cfg.URLs)] }

// user expands a per-user template for this process's i-th user.
func (cfg *Config) user(template string, i int) string { return expand(template, cfg.UserOffset+i) }

func expand(template string, i int) string {
	return strings.ReplaceAll(template, "{i}", fmt.Sprint(i))
}

// connectAll opens n connections with bounded concurrency; failed ones are nil.
func connectAll(cfg *Config, n, offset int, prefix string, publisher bool, concurrency int,
	rec *Recorder, ctr *Counters, phase string) ([]*Conn, int, []string) {
	conns := make([]*Conn, n)
	var done, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				c, err := Dial(cfg, cfg.urlFor(offset+i), fmt.Sprintf("%s%d", prefix, offset+i), publisher, rec, ctr)
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
					errMu.Unlock()
				} else {
					conns[i] = c
				}
				done.Add(1)
			}
		}()
	}
	stop := progress(phase, &done, int64(n))
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	stop()
	return conns, int(failed.Load()), errs
}

func progress(phase string, done *atomic.Int64, total int64) func() {
	ticker := time.NewTicker(500 * time.Millisecond)
	quit := make(chan struct{})
	go func() {
		for {
			select {
			case <-ticker.C:
				emit("progress", map[string]any{"phase": phase, "done": done.Load(), "total": total})
			case <-quit:
				return
			}
		}
	}()
	return func() { ticker.Stop(); close(quit) }
}

// -- traffic: subscribers, publishers, load steps ------------------------------------------

func traffic(cfg *Config) {
	ctr := &Counters{}
	rec := NewRecorder(ctr)
	rec.SetShared(cfg.Origin, cfg.EpochMicros)
	subsOf := map[string]int{}
	for i := 0; i < cfg.Subscribers; i++ {
		for _, t := range cfg.Channels {
			subsOf[cfg.user(t, i)]++
		}
	}

	before := sampleProcs(cfg.Pids)
	started := time.Now()
	subs, failed, errs := connectAll(cfg, cfg.Subscribers, cfg.UserOffset, "u", false, cfg.ConnectConcurrency, rec, ctr, "connect")
	connectSecs := time.Since(started).Seconds()
	afterConnect := sampleProcs(cfg.Pids)
	if failed > 0 {
		fatal("%d of %d subscribers failed to connect: %v", failed, cfg.Subscribers, errs)
	}

	subStarted := time.Now()
	var done, subFailed atomic.Int64
	var firstErr atomic.Value
	stop := progress("subscribe", &done, int64(len(subs)))
	var wg sync.WaitGroup
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	for i, c := range subs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, c *Conn) {
			defer func() { <-sem; wg.Done() }()
			channels := make([]string, len(cfg.Channels))
			for k, t := range cfg.Channels {
				channels[k] = cfg.user(t, i)
			}
			if err := c.Subscribe(channels, 60*time.Second); err != nil {
				subFailed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			done.Add(1)
		}(i, c)
	}
	wg.Wait()
	stop()
	subscribeSecs := time.Since(subStarted).Seconds()
	if subFailed.Load() > 0 {
		fatal("%d subscriptions failed: %v", subFailed.Load(), firstErr.Load())
	}
	pubs, failed, errs := connectAll(cfg, cfg.Publishers, cfg.UserOffset, "pub", true, 8, rec, ctr, "publishers")
	if failed > 0 {
		fatal("%d publishers failed to connect: %v", failed, errs)
	}
	afterSetup := sampleProcs(cfg.Pids)
	rss := map[string]int64{}
	for k, v := range afterSetup.rss {
		rss[k] = v
	}
	emit("setup", map[string]any{
		"connections":         cfg.Subscribers,
		"connect_seconds":     round3(connectSecs),
		"connections_per_s":   round3(float64(cfg.Subscribers) / connectSecs),
		"subscribe_seconds":   round3(subscribeSecs),
		"subscriptions_per_s": round3(float64(cfg.Subscribers*len(cfg.Channels)) / subscribeSecs),
		"rss_before_bytes":    before.rss,
		"rss_after_bytes":     rss,
		"connect_proc":        procDelta(before, afterConnect),
		"loadgen_rss_bytes":   rssBytes(0),
	})

	// Expected deliveries per message of each stream, on average.
	perMsg := make([]float64, len(cfg.Streams))
	for s, st := range cfg.Streams {
		total := 0
		for i := 0; i < st.Count; i++ {
			total += subsOf[cfg.user(st.Channel, i)]
		}
		perMsg[s] = float64(total) / float64(max(st.Count, 1))
	}

	var results []map[string]any
	maxDeliveries := 0.0
	scale := 1.0
	step := 0
	for ; step < cfg.MaxSteps; step++ {
		streams := scaled(cfg.Streams, scale)
		r := runStep(cfg, step, streams, subsOf, pubs, rec, ctr)
		r["phase"] = "ramp"
		results = append(results, r)
		emit("step", r)
		if d := r["deliveries_per_s"].(float64); d > maxDeliveries {
			maxDeliveries = d
		}
		if r["breakdown"].(bool) || ctr.disconnects.Load() > 0 {
			step++
			break
		}
		scale *= cfg.RampFactor
	}
	if cfg.HalfStep && maxDeliveries > 0 && len(cfg.Streams) > 0 && ctr.disconnects.Load() == 0 {
		other := 0.0
		for s := 1; s < len(cfg.Streams); s++ {
			other += cfg.Streams[s].Rate * perMsg[s]
		}
		rate0 := (maxDeliveries/2 - other) / math.Max(perMsg[0], 1e-9)
		if rate0 > 0 {
			// The ramp ends past what the system sustains, leaving a backlog: run at half
			// load behind it and the step measures the backlog, not half load.
			emit("drain", map[string]any{"seconds": round3(drain(ctr, time.Second, time.Minute))})
			streams := append([]Stream(nil), cfg.Streams...)
			streams[0].Rate = rate0
			r := runStep(cfg, step, streams, subsOf, pubs, rec, ctr)
			r["phase"] = "half"
			emit("step", r)
		}
	}
	for _, c := range pubs {
		c.Close()
	}
	for _, c := range subs {
		c.Close()
	}
	emit("done", map[string]any{
		"max_deliveries_per_s": round3(maxDeliveries),
		"disconnects":          ctr.disconnects.Load(),
		"error_frames":         ctr.errorFrames.Load(),
		"last_error":           ctr.lastError.Load(),
	})
}

func scaled(streams []Stream, scale float64) []Stream {
	out := append([]Stream(nil), streams...)
	if len(out) > 0 {
		out[0].Rate *= scale
	}
	return out
}

func runStep(cfg *Config, step int, streams []Stream, subsOf map[string]int, pubs []*Conn,
	rec *Recorder, ctr *Counters) map[string]any {
	dur := time.Duration(cfg.StepSeconds * float64(time.Second))
	var expected, published, pubErrors atomic.Int64
	counters := make([]atomic.Int64, len(streams))
	recvStart := ctr.received.Load()
	procStart := sampleProcs(cfg.Pids)
	begin := time.Now()
	var wg sync.WaitGroup
	for p, c := range pubs {
		wg.Add(1)
		go func(p int, c *Conn) {
			defer wg.Done()
			var scratch bytes.Buffer
			body := make([]byte, 0, cfg.PayloadBytes+32)
			sent := make([]int64, len(streams))
			for {
				elapsed := time.Since(begin)
				if elapsed >= dur {
					return
				}
				for s, st := range streams {
					// Message k of the stream is due at k/rate and goes out through publisher k mod P.
					total := int64(0)
					if st.Rate > 0 {
						total = int64(elapsed.Seconds()*st.Rate) + 1
					}
					mine := int64(0)
					if total > int64(p) {
						mine = (total - int64(p) + int64(len(pubs)) - 1) / int64(len(pubs))
					}
					due := mine - sent[s]
					for ; due > 0; due-- {
						i := int(counters[s].Add(1)-1) % max(st.Count, 1)
						channel := cfg.user(st.Channel, i)
						body = payload(body, rec.Now(), cfg.Origin*maxSteps+step, cfg.PayloadBytes)
						if err := c.Publish(&scratch, channel, body); err != nil {
							pubErrors.Add(1)
							return
						}
						sent[s]++
						published.Add(1)
						expected.Add(int64(subsOf[channel]))
					}
				}
				time.Sleep(time.Millisecond)
			}
		}(p, c)
	}
	wg.Wait()
	window := time.Since(begin).Seconds()
	recvWindow := ctr.received.Load() - recvStart
	procEnd := sampleProcs(cfg.Pids)

	// Drain: wait for the deliveries of this step still on their way.
	drainLimit := time.Now().Add(time.Duration(math.Max(3, cfg.StepSeconds) * float64(time.Second)))
	for rec.recv[step].Load() < expected.Load() && time.Now().Before(drainLimit) && ctr.disconnects.Load() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	received := rec.recv[step].Load()
	// Quiet: let stragglers land before the next step starts.
	last := ctr.received.Load()
	quietLimit := time.Now().Add(30 * time.Second) // an overloaded step leaves a backlog
	for time.Now().Before(quietLimit) {
		time.Sleep(250 * time.Millisecond)
		now := ctr.received.Load()
		if now == last {
			break
		}
		last = now
	}
	offeredMsgs := 0.0
	offeredDeliveries := 0.0
	rates := []float64{}
	for _, st := range streams {
		offeredMsgs += st.Rate
		rates = append(rates, round3(st.Rate))
	}
	for _, st := range streams {
		n := 0
		for i := 0; i < st.Count; i++ {
			n += subsOf[cfg.user(st.Channel, i)]
		}
		offeredDeliveries += st.Rate * float64(n) / float64(max(st.Count, 1))
	}
	exp := expected.Load()
	deliveries := float64(recvWindow) / window
	lat := rec.steps[step].Summary()
	lost := exp - received
	// Broken down: latency past the bound, deliveries lagging what was published,
	// publishers held back by the server, or messages lost.
	breakdown := lat["p99"] > cfg.BreakdownP99Ms ||
		float64(recvWindow) < cfg.BreakdownRatio*float64(exp) ||
		float64(published.Load()) < cfg.BreakdownRatio*math.Floor(offeredMsgs*cfg.StepSeconds) ||
		float64(lost) > 0.01*float64(exp)
	return map[string]any{
		"step":                     step,
		"stream_rates":             rates,
		"offered_msgs_per_s":       round3(offeredMsgs),
		"published_msgs_per_s":     round3(float64(published.Load()) / window),
		"offered_deliveries_per_s": round3(offeredDeliveries),
		"deliveries_per_s":         round3(deliveries),
		"expected":                 exp,
		"received":                 received,
		"lost":                     lost,
		"publish_errors":           pubErrors.Load(),
		"latency_ms":               lat,
		"proc":                     procDelta(procStart, procEnd),
		"breakdown":                breakdown,
		"disconnects":              ctr.disconnects.Load(),
		"error_frames":             ctr.errorFrames.Load(),
	}
}

// -- storm: everyone connects and authenticates at once ------------------------------------

func storm(cfg *Config) {
	ctr := &Counters{}
	rec := NewRecorder(ctr)
	n := cfg.Subscribers
	hist := &Histogram{}
	conns := make([]*Conn, n)
	var failed, done atomic.Int64
	var errMu sync.Mutex
	errCount := map[string]int{}
	var lastOK atomic.Int64
	gate := make(chan struct{})
	var ready, wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		ready.Add(1)
		go func(i int) {
			defer wg.Done()
			ready.Done()
			<-gate
			t0 := rec.Now()
			c, err := Dial(cfg, cfg.urlFor(i), fmt.Sprintf("u%d", i), false, rec, ctr)
			t1 := rec.Now()
			if err != nil {
				failed.Add(1)
				msg := err.Error()
				if k := strings.LastIndex(msg, ": "); k >= 0 && len(msg) > 120 {
					msg = msg[k+2:]
				}
				errMu.Lock()
				errCount[msg]++
				errMu.Unlock()
			} else {
				conns[i] = c
				hist.Record(uint64(t1 - t0))
				for {
					v := lastOK.Load()
					if t1 <= v || lastOK.CompareAndSwap(v, t1) {
						break
					}
				}
			}
			done.Add(1)
		}(i)
	}
	ready.Wait()
	stop := progress("storm", &done, int64(n))
	before := sampleProcs(cfg.Pids)
	begin := rec.Now()
	close(gate)
	wg.Wait()
	stop()
	after := sampleProcs(cfg.Pids)
	elapsed := float64(rec.Now()-begin) / 1e6
	okCount := int64(n) - failed.Load()
	toLast := float64(lastOK.Load()-begin) / 1e6
	type kv struct {
		K string
		V int
	}
	var top []kv
	for k, v := range errCount {
		top = append(top, kv{k, v})
	}
	sort.Slice(top, func(a, b int) bool { return top[a].V > top[b].V })
	errors := map[string]int{}
	for i, e := range top {
		if i >= 5 {
			break
		}
		errors[e.K] = e.V
	}
	time.Sleep(time.Duration(cfg.SettleSeconds * float64(time.Second)))
	settled := sampleProcs(cfg.Pids)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	emit("storm", map[string]any{
		"clients":           n,
		"connected":         okCount,
		"failed":            failed.Load(),
		"errors":            errors,
		"seconds":           round3(elapsed),
		"seconds_to_last":   round3(toLast),
		"connections_per_s": round3(float64(okCount) / math.Max(toLast, 1e-9)),
		"latency_ms":        hist.Summary(),
		"proc":              procDelta(before, after),
		"rss_settled_bytes": settled.rss,
		"disconnects":       ctr.disconnects.Load(),
	})
	emit("done", map[string]any{})
}

// -- idle: how many idle authenticated connections fit, and their memory -------------------

func idle(cfg *Config) {
	ctr := &Counters{}
	rec := NewRecorder(ctr)
	var all []*Conn
	base := sampleProcs(cfg.Pids)
	emit("idle", map[string]any{"connections": 0, "rss_bytes": base.rss, "cpu_seconds": base.cpu})
	for len(all) < cfg.Subscribers {
		n := min(cfg.Batch, cfg.Subscribers-len(all))
		t0 := time.Now()
		conns, failed, errs := connectAll(cfg, n, len(all), "u", false, cfg.ConnectConcurrency, rec, ctr,
			fmt.Sprintf("idle %d+%d", len(all), n))
		secs := time.Since(t0).Seconds()
		for _, c := range conns {
			if c != nil {
				all = append(all, c)
			}
		}
		time.Sleep(time.Duration(cfg.SettleSeconds * float64(time.Second)))
		s := sampleProcs(cfg.Pids)
		emit("idle", map[string]any{
			"connections":       len(all),
			"failed":            failed,
			"errors":            errs,
			"rss_bytes":         s.rss,
			"cpu_seconds":       s.cpu,
			"connections_per_s": round3(float64(n-failed) / secs),
			"disconnects":       ctr.disconnects.Load(),
			"loadgen_rss_bytes": rssBytes(0),
		})
		if failed > n/100 || ctr.disconnects.Load() > 0 {
			break
		}
	}
	hold0 := sampleProcs(cfg.Pids)
	time.Sleep(time.Duration(cfg.HoldSeconds * float64(time.Second)))
	hold1 := sampleProcs(cfg.Pids)
	emit("idle_hold", map[string]any{
		"connections": len(all),
		"proc":        procDelta(hold0, hold1),
		"disconnects": ctr.disconnects.Load(),
	})
	for _, c := range all {
		c.Close()
	}
	emit("done", map[string]any{"connections": len(all)})
}

// drain waits until no delivery has arrived for `quiet` (at most `limit`); the seconds waited.
func drain(ctr *Counters, quiet, limit time.Duration) float64 {
	started := time.Now()
	last := ctr.received.Load()
	for time.Since(started) < limit {
		time.Sleep(quiet)
		now := ctr.received.Load()
		if now == last {
			break
		}
		last = now
	}
	return time.Since(started).Seconds()
}
