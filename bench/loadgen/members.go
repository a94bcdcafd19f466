package main

// members: hold many Neurelay connections subscribed to channels, spread over
// several gateways, so that a separate client can measure presence (or the
// delivery on other channels while they arrive) without paying for the
// members in its own process. Arrivals may be spread over a window (a
// join/leave storm). The connections stay until stdin reaches its end (the
// caller closes it), then the mode reports the join/leave frames they got.

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

// joinPeerMember holds a member of a peer system (Centrifugo) with the load generator's client.
func joinPeerMember(cfg *Config, url, user, channel string, rec *Recorder, ctr *Counters) (*memberConn, error) {
	c, err := Dial(cfg, url, user, false, rec, ctr)
	if err != nil {
		return nil, err
	}
	if err := c.Subscribe([]string{channel}, 60*time.Second); err != nil {
		c.Close()
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

// joinMember connects, authenticates and subscribes one member; it then reads until closed.
func joinMember(cfg *Config, url, user, channel string, counts *memberCounts) (*memberConn, error) {
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
	request, _ := json.Marshal(map[string]any{"type": "subscribe", "channel": channel, "id": 1})
	ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, request); err != nil {
		ws.Close()
		return nil, err
	}
	select {
	case err := <-m.subscribed:
		if err != nil {
			ws.Close()
			return nil, err
		}
	case <-time.After(60 * time.Second):
		ws.Close()
		return nil, errors.New("subscribe timed out")
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
	var done, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr string
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	var wg sync.WaitGroup
	stop := progress("members", &done, int64(n))
	begin := time.Now()
	spacing := time.Duration(mc.ArrivalSeconds * float64(time.Second) / float64(max(n, 1)))
	for i := 0; i < n; i++ {
		if wait := time.Until(begin.Add(time.Duration(i) * spacing)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			url, channel := mc.URLs[i%len(mc.URLs)], mc.Channels[i%len(mc.Channels)]
			user := fmt.Sprintf("%s%d", mc.UserPrefix, i)
			var m *memberConn
			var err error
			if cfg.Protocol == "centrifugo" {
				m, err = joinPeerMember(cfg, url, user, channel, rec, ctr)
			} else {
				m, err = joinMember(cfg, url, user, channel, counts)
			}
			if err != nil {
				failed.Add(1)
				errMu.Lock()
				if firstErr == "" {
					firstErr = err.Error()
				}
				errMu.Unlock()
			} else {
				conns[i] = m
			}
			done.Add(1)
		}(i)
	}
	wg.Wait()
	stop()
	arrived := time.Since(begin).Seconds()
	if failed.Load() > 0 {
		fatal("%d of %d members failed to join: %s", failed.Load(), n, firstErr)
	}
	emit("members", map[string]any{
		"members":        n,
		"arrived_in_s":   round3(arrived),
		"joins_received": counts.joins.Load(),
		"disconnects":    counts.disconnects.Load(),
	})
	// Held until the caller closes stdin (or the time limit ends the run).
	reader := bufio.NewReader(os.Stdin)
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
