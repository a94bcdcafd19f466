package main

// members: hold many Neurelay connections subscribed to channels, spread over
// several gateways, so that a separate client can measure presence (or the
// delivery on other channels while they arrive) without paying for the
// members in its own process. Arrivals may be spread over a window (a
// join/leave storm). With subscribe_on_signal every member first connects and
// authenticates, the mode reports "connected" and waits for a line on stdin;
// only then do the members subscribe, spread over the window (a storm of
// subscriptions alone, without the connections' set-up). The connections stay
// until stdin reaches its end (the caller closes it), then the mode reports the
// join/leave frames they got.

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

type MembersConfig struct {
	URLs           []string `json:"urls"`            // member i connects to URLs[i % len]
	Channels       []string `json:"channels"`        // member i subscribes to Channels[i % len]
	UserPrefix     string   `json:"user_prefix"`     // member i is user <prefix><i>
	ArrivalSeconds float64  `json:"arrival_seconds"` // member i starts at i/n of it (0: at once)
	// Connect everyone at once, then subscribe (spread over the window) on a line on stdin.
	SubscribeOnSignal bool `json:"subscribe_on_signal"`
}

type memberConn struct {
	ws         *websocket.Conn
	subscribed chan error
	closing    atomic.Bool
	peer       *Conn // a Centrifugo member, held through the load generator's own client
}

type memberCounts struct {
	joins, leaves, disconnects atomic.Int64
}

func memberToken(secret, user string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(map[string]any{
		"sub":      user,
		"exp":      time.Now().Add(2 * time.Hour).Unix(),
		"channels": []string{"*"},
		"info":     map[string]string{"name": user},
	})
	signing := header + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

// connectPeerMember holds a member of a peer system (Centrifugo) with the load generator's client.
func connectPeerMember(cfg *Config, url, user string, rec *Recorder, ctr *Counters) (*memberConn, error) {
	c, err := Dial(cfg, url, user, false, rec, ctr)
	if err != nil {
		return nil, err
	}
	return &memberConn{peer: c}, nil
}

func (m *memberConn) close() {
	if m.peer != nil {
		m.peer.Close()
		return
	}
	m.closing.Store(true)
	m.ws.Close()
}

// connectMember connects and authenticates one member; it then reads until closed.
func connectMember(cfg *Config, url, user string, counts *memberCounts) (*memberConn, error) {
	ws, _, err := neurelayDialer.Dial(url+"?token="+memberToken(cfg.Secret, user), nil)
	if err != nil {
		return nil, err
	}
	m := &memberConn{ws: ws, subscribed: make(chan error, 1)}
	ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, data, err := ws.ReadMessage(); err != nil || !bytes.Contains(data, []byte(`"type":"authenticated"`)) {
		ws.Close()
		return nil, fmt.Errorf("not authenticated: %v %s", err, clip(data))
	}
	ws.SetReadDeadline(time.Time{})
	go m.read(counts)
	return m, nil
}

// subscribe subscribes a connected member to its channel and waits for the answer.
func (m *memberConn) subscribe(channel string) error {
	if m.peer != nil {
		return m.peer.Subscribe([]string{channel}, 60*time.Second)
	}
	request, _ := json.Marshal(map[string]any{"type": "subscribe", "channel": channel, "id": 1})
	m.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := m.ws.WriteMessage(websocket.TextMessage, request); err != nil {
		return err
	}
	select {
	case err := <-m.subscribed:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("subscribe timed out")
	}
}

// joinMember connects one member and, unless told to wait, subscribes it.
func joinMember(cfg *Config, url, user, channel string, subscribe bool, rec *Recorder, ctr *Counters, counts *memberCounts) (*memberConn, error) {
	var m *memberConn
	var err error
	if cfg.Protocol == "centrifugo" {
		m, err = connectPeerMember(cfg, url, user, rec, ctr)
	} else {
		m, err = connectMember(cfg, url, user, counts)
	}
	if err != nil || !subscribe {
		return m, err
	}
	if err := m.subscribe(channel); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

func (m *memberConn) read(counts *memberCounts) {
	for {
		_, data, err := m.ws.ReadMessage()
		if err != nil {
			if !m.closing.Load() {
				counts.disconnects.Add(1)
			}
			select {
			case m.subscribed <- err:
			default:
			}
			return
		}
		switch {
		case bytes.HasPrefix(data, []byte(`{"type":"join"`)):
			counts.joins.Add(1)
		case bytes.HasPrefix(data, []byte(`{"type":"leave"`)):
			counts.leaves.Add(1)
		case bytes.HasPrefix(data, []byte(`{"type":"subscribed"`)):
			m.subscribed <- nil
		case bytes.HasPrefix(data, []byte(`{"type":"error"`)):
			select {
			case m.subscribed <- fmt.Errorf("refused: %s", clip(data)):
			default:
			}
		}
	}
}

// memberFailures keeps the count and the first error of members that failed.
type memberFailures struct {
	count atomic.Int64
	mu    sync.Mutex
	first string
}

func (f *memberFailures) add(err error) {
	f.count.Add(1)
	f.mu.Lock()
	if f.first == "" {
		f.first = err.Error()
	}
	f.mu.Unlock()
}

// spread runs act(i) for every member, member i starting at i/n of the window, at most
// `concurrency` at a time (0: no bound); it returns the seconds until the last one ended.
func spread(n int, window float64, concurrency int, phase string, act func(i int)) float64 {
	var sem chan struct{}
	if concurrency > 0 {
		sem = make(chan struct{}, concurrency)
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	stop := progress(phase, &done, int64(n))
	begin := time.Now()
	spacing := time.Duration(window * float64(time.Second) / float64(max(n, 1)))
	for i := 0; i < n; i++ {
		if wait := time.Until(begin.Add(time.Duration(i) * spacing)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		if sem != nil {
			sem <- struct{}{}
		}
		go func(i int) {
			defer func() {
				if sem != nil {
					<-sem
				}
				wg.Done()
			}()
			act(i)
			done.Add(1)
		}(i)
	}
	wg.Wait()
	stop()
	return time.Since(begin).Seconds()
}

func members(cfg *Config) {
	mc := cfg.Members
	if mc == nil || len(mc.URLs) == 0 || len(mc.Channels) == 0 {
		fatal("members mode needs members.urls and members.channels")
	}
	for _, url := range mc.URLs {
		if !strings.HasPrefix(url, "ws://127.0.0.1:") && !strings.HasPrefix(url, "ws://localhost:") {
			fatal("refusing a target that is not on the loopback interface: %s", url)
		}
	}
	n := cfg.Subscribers
	counts := &memberCounts{}
	ctr := &Counters{}
	rec := NewRecorder(ctr)
	conns := make([]*memberConn, n)
	failures := &memberFailures{}
	channel := func(i int) string { return mc.Channels[i%len(mc.Channels)] }
	reader := bufio.NewReader(os.Stdin)
	window := mc.ArrivalSeconds
	if mc.SubscribeOnSignal {
		window = 0 // the connections are not the storm: they come first, as fast as they can
	}
	arrived := spread(n, window, cfg.ConnectConcurrency, "members", func(i int) {
		url, user := mc.URLs[i%len(mc.URLs)], fmt.Sprintf("%s%d", mc.UserPrefix, i)
		m, err := joinMember(cfg, url, user, channel(i), !mc.SubscribeOnSignal, rec, ctr, counts)
		if err != nil {
			failures.add(err)
		} else {
			conns[i] = m
		}
	})
	if failures.count.Load() > 0 {
		fatal("%d of %d members failed to join: %s", failures.count.Load(), n, failures.first)
	}
	if mc.SubscribeOnSignal {
		emit("connected", map[string]any{"members": n, "connected_in_s": round3(arrived)})
		// The signal is a non-empty line: the configuration's own newline may still be unread.
		for {
			line, err := reader.ReadString('\n')
			if err != nil {
				fatal("stdin ended before the signal to subscribe")
			}
			if strings.TrimSpace(line) != "" {
				break
			}
		}
		// Each member is its own client: none waits for another's answer, the window paces them.
		arrived = spread(n, mc.ArrivalSeconds, 0, "subscribe", func(i int) {
			if err := conns[i].subscribe(channel(i)); err != nil {
				failures.add(err)
			}
		})
		if failures.count.Load() > 0 {
			fatal("%d of %d members failed to subscribe: %s", failures.count.Load(), n, failures.first)
		}
	}
	emit("members", map[string]any{
		"members":        n,
		"arrived_in_s":   round3(arrived),
		"joins_received": counts.joins.Load(),
		"disconnects":    counts.disconnects.Load(),
	})
	// Held until the caller closes stdin (or the time limit ends the run).
	for {
		if _, err := reader.ReadString('\n'); err != nil {
			break
		}
	}
	joins, disconnects := counts.joins.Load(), counts.disconnects.Load()
	for _, m := range conns {
		m.close()
	}
	emit("done", map[string]any{
		"members":         n,
		"joins_received":  joins,
		"leaves_received": counts.leaves.Load(),
		"disconnects":     disconnects,
	})
}
