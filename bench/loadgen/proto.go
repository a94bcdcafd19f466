package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The wire protocols the load generator speaks:
//   neurelay        the gateway's JSON subprotocol (token at the upgrade)
//   neurelay-batch  the same in neurelay.v1.json+batch: a frame may hold several, one per line
//   socketio  Engine.IO 4 / Socket.IO 5 over a WebSocket (no polling)
//   nats      the NATS text protocol over NATS's WebSocket listener
//   centrifugo  Centrifugo's JSON protocol (connect with a token, subscribe, publish; a
//               frame may hold several replies or pushes, one per line)

var (
	tsKey = []byte(`"ts"`)
	sKey  = []byte(`"s"`)
)

// Counters shared by every connection.
type Counters struct {
	received    atomic.Int64 // deliveries of bench messages
	disconnects atomic.Int64
	errorFrames atomic.Int64
	lastError   atomic.Value // string
}

type Conn struct {
	proto   string
	ws      *websocket.Conn
	wmu     sync.Mutex
	acks    chan error
	rec     *Recorder
	ctr     *Counters
	closing atomic.Bool
	buf     []byte       // NATS stream parser buffer
	nextID  atomic.Int64 // Centrifugo command ids
}

func mintToken(secret, sub string, publish bool) string {
	claims := map[string]any{
		"sub":      sub,
		"exp":      time.Now().Add(2 * time.Hour).Unix(),
		"channels": []string{"*"},
	}
	if publish {
		claims["publish"] = []string{"*"}
	}
	return signToken(secret, claims)
}

// centrifugoToken is a connection token without a `channels` claim: Centrifugo would
// subscribe the connection to the channels listed there on the server side.
func centrifugoToken(secret, sub string) string {
	return signToken(secret, map[string]any{"sub": sub, "exp": time.Now().Add(2 * time.Hour).Unix()})
}

func signToken(secret string, claims map[string]any) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(claims)
	signing := header + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func natsSubject(channel string) string { return strings.ReplaceAll(channel, ":", ".") }

var netDialer = &net.Dialer{Timeout: 30 * time.Second}

func newDialer(subprotocols []string) *websocket.Dialer {
	return &websocket.Dialer{
		NetDial:          netDialer.Dial,
		Proxy:            nil, // loopback only, never through a proxy
		HandshakeTimeout: 60 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  2048,
		Subprotocols:     subprotocols,
	}
}

var (
	neurelayDialer      = newDialer([]string{"neurelay.v1.json"})
	neurelayBatchDialer = newDialer([]string{"neurelay.v1.json+batch"})
	plainDialer         = newDialer(nil)
)

// Dial connects and authenticates; the returned Conn is reading.
func Dial(cfg *Config, url, user string, publisher bool, rec *Recorder, ctr *Counters) (*Conn, error) {
	c := &Conn{proto: cfg.Protocol, acks: make(chan error, 64), rec: rec, ctr: ctr}
	var err error
	switch cfg.Protocol {
	case "neurelay", "neurelay-batch":
		token := mintToken(cfg.Secret, user, publisher)
		dialer := neurelayDialer
		if cfg.Protocol == "neurelay-batch" {
			dialer = neurelayBatchDialer
		}
		c.ws, _, err = dialer.Dial(url+"?token="+token, nil)
		if err != nil {
			return nil, err
		}
		if got := c.ws.Subprotocol(); got != dialer.Subprotocols[0] {
			c.ws.Close()
			return nil, fmt.Errorf("the server chose subprotocol %q, not %q", got, dialer.Subprotocols[0])
		}
		err = c.expect(func(b []byte) (bool, error) {
			if bytes.Contains(b, []byte(`"type":"authenticated"`)) {
				return true, nil
			}
			return false, fmt.Errorf("not authenticated: %s", clip(b))
		})
	case "socketio":
		token := mintToken(cfg.Secret, user, publisher)
		c.ws, _, err = plainDialer.Dial(url, nil)
		if err != nil {
			return nil, err
		}
		err = c.expect(func(b []byte) (bool, error) {
			if len(b) > 0 && b[0] == '0' {
				return true, nil
			}
			return false, fmt.Errorf("no engine.io open packet: %s", clip(b))
		})
		if err == nil {
			auth, _ := json.Marshal(map[string]string{"token": token})
			err = c.write(append([]byte("40"), auth...))
		}
		if err == nil {
			err = c.expect(func(b []byte) (bool, error) {
				switch {
				case bytes.HasPrefix(b, []byte("40")):
					return true, nil
				case bytes.HasPrefix(b, []byte("44")):
					return false, fmt.Errorf("socket.io refused: %s", clip(b))
				}
				return false, nil
			})
		}
	case "nats":
		c.ws, _, err = plainDialer.Dial(url, nil)
		if err != nil {
			return nil, err
		}
		err = c.expect(func(b []byte) (bool, error) {
			if bytes.HasPrefix(b, []byte("INFO ")) {
				return true, nil
			}
			return false, fmt.Errorf("no INFO: %s", clip(b))
		})
		if err == nil {
			connect, _ := json.Marshal(map[string]any{
				"verbose": false, "pedantic": false, "auth_token": cfg.NatsToken,
				"protocol": 1, "name": user, "lang": "go-bench", "version": "0",
			})
			err = c.write([]byte("CONNECT " + string(connect) + "\r\nPING\r\n"))
		}
		if err == nil {
			err = c.expect(func(b []byte) (bool, error) {
				if bytes.Contains(b, []byte("PONG")) {
					return true, nil
				}
				if bytes.HasPrefix(b, []byte("-ERR")) {
					return false, fmt.Errorf("nats refused: %s", clip(b))
				}
				return false, nil
			})
		}
	case "centrifugo":
		c.ws, _, err = plainDialer.Dial(url, nil)
		if err != nil {
			return nil, err
		}
		connect, _ := json.Marshal(map[string]any{
			"id": c.nextID.Add(1), "connect": map[string]any{"token": centrifugoToken(cfg.Secret, user), "name": "go-bench"},
		})
		err = c.write(connect)
		if err == nil {
			err = c.expect(func(b []byte) (bool, error) {
				switch {
				case bytes.Contains(b, []byte(`"connect":`)):
					return true, nil
				case bytes.Contains(b, []byte(`"error":`)):
					return false, fmt.Errorf("centrifugo refused: %s", clip(b))
				}
				return false, nil
			})
		}
	default:
		return nil, fmt.Errorf("unknown protocol %q", cfg.Protocol)
	}
	if err != nil {
		if c.ws != nil {
			c.ws.Close()
		}
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

func clip(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// expect reads frames during the handshake until `check` accepts one.
func (c *Conn) expect(check func([]byte) (bool, error)) error {
	c.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	defer c.ws.SetReadDeadline(time.Time{})
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		if c.proto == "socketio" && len(data) == 1 && data[0] == '2' {
			c.write([]byte("3"))
			continue
		}
		ok, err := check(data)
		if err != nil || ok {
			return err
		}
	}
}

func (c *Conn) write(data []byte) error {
	kind := websocket.TextMessage
	if c.proto == "nats" {
		kind = websocket.BinaryMessage
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return c.ws.WriteMessage(kind, data)
}

func (c *Conn) Close() {
	c.closing.Store(true)
	c.ws.Close()
}

// Subscribe follows channels and returns once the server confirmed them all.
func (c *Conn) Subscribe(channels []string, timeout time.Duration) error {
	if len(channels) == 0 {
		return nil
	}
	want := len(channels)
	var out bytes.Buffer
	for i, ch := range channels {
		switch c.proto {
		case "neurelay", "neurelay-batch":
			out.Reset()
			fmt.Fprintf(&out, `{"type":"subscribe","channel":%q,"id":%d}`, ch, i+1)
			if err := c.write(out.Bytes()); err != nil {
				return err
			}
		case "socketio":
			out.Reset()
			fmt.Fprintf(&out, `42%d["subscribe",%q]`, i+1, ch)
			if err := c.write(out.Bytes()); err != nil {
				return err
			}
		case "nats":
			fmt.Fprintf(&out, "SUB %s %d\r\n", natsSubject(ch), i+1)
		case "centrifugo":
			out.Reset()
			fmt.Fprintf(&out, `{"id":%d,"subscribe":{"channel":%q}}`, c.nextID.Add(1), ch)
			if err := c.write(out.Bytes()); err != nil {
				return err
			}
		}
	}
	if c.proto == "nats" {
		out.WriteString("PING\r\n")
		if err := c.write(out.Bytes()); err != nil {
			return err
		}
		want = 1
	}
	deadline := time.After(timeout)
	for i := 0; i < want; i++ {
		select {
		case err := <-c.acks:
			if err != nil {
				return err
			}
		case <-deadline:
			return errors.New("subscribe timed out")
		}
	}
	return nil
}

// Publish sends one message; `payload` is a JSON object.
func (c *Conn) Publish(scratch *bytes.Buffer, channel string, payload []byte) error {
	scratch.Reset()
	switch c.proto {
	case "neurelay", "neurelay-batch":
		scratch.WriteString(`{"type":"publish","channel":"`)
		scratch.WriteString(channel)
		scratch.WriteString(`","payload":`)
		scratch.Write(payload)
		scratch.WriteByte('}')
	case "socketio":
		scratch.WriteString(`42["publish",{"channel":"`)
		scratch.WriteString(channel)
		scratch.WriteString(`","payload":`)
		scratch.Write(payload)
		scratch.WriteString(`}]`)
	case "centrifugo":
		scratch.WriteString(`{"id":`)
		scratch.WriteString(strconv.FormatInt(c.nextID.Add(1), 10))
		scratch.WriteString(`,"publish":{"channel":"`)
		scratch.WriteString(channel)
		scratch.WriteString(`","data":`)
		scratch.Write(payload)
		scratch.WriteString(`}}`)
	case "nats":
		scratch.WriteString("PUB ")
		scratch.WriteString(natsSubject(channel))
		scratch.WriteByte(' ')
		scratch.WriteString(strconv.Itoa(len(payload)))
		scratch.WriteString("\r\n")
		scratch.Write(payload)
		scratch.WriteString("\r\n")
	}
	return c.write(scratch.Bytes())
}

func (c *Conn) fail(err error) {
	select {
	case c.acks <- err:
	default:
	}
}

func (c *Conn) readLoop() {
	buf := make([]byte, 0, 4096)
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			if !c.closing.Load() {
				c.ctr.disconnects.Add(1)
				c.ctr.lastError.Store(err.Error())
			}
			c.fail(err)
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				break
			}
		}
		switch c.proto {
		case "neurelay":
			c.onNeurelay(buf)
		case "neurelay-batch":
			eachLine(buf, c.onNeurelay)
		case "centrifugo":
			eachLine(buf, c.onCentrifugo)
		case "socketio":
			c.onSocketIO(buf)
		case "nats":
			c.onNats(buf)
		}
	}
}

func (c *Conn) onNeurelay(b []byte) {
	if c.rec.Observe(b) {
		return
	}
	var f struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
		ID      any    `json:"id"`
	}
	if bytes.HasPrefix(b, []byte(`{"type":"published"`)) {
		return
	}
	if json.Unmarshal(b, &f) != nil {
		return
	}
	switch f.Type {
	case "subscribed":
		c.fail(nil)
	case "error":
		c.ctr.errorFrames.Add(1)
		c.ctr.lastError.Store(f.Code + ": " + f.Message)
		if f.ID != nil {
			c.fail(errors.New(f.Code + ": " + f.Message))
		}
	}
}

// eachLine calls on for every newline-separated part of a frame.
func eachLine(frame []byte, on func([]byte)) {
	for rest := frame; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		on(line)
	}
}

// onCentrifugo handles one reply or push: a publication, a subscribe reply, an
// error, or the server's ping (an empty object), answered with an empty command.
func (c *Conn) onCentrifugo(b []byte) {
	if c.rec.Observe(b) {
		return
	}
	switch {
	case bytes.Equal(b, []byte("{}")):
		c.write([]byte("{}"))
	case bytes.Contains(b, []byte(`"error":`)):
		c.ctr.errorFrames.Add(1)
		c.ctr.lastError.Store(clip(b))
		c.fail(fmt.Errorf("centrifugo error: %s", clip(b)))
	case bytes.Contains(b, []byte(`"subscribe":`)):
		c.fail(nil)
	}
}

func (c *Conn) onSocketIO(b []byte) {
	switch {
	case len(b) == 1 && b[0] == '2':
		c.write([]byte("3"))
	case bytes.HasPrefix(b, []byte("42")):
		c.rec.Observe(b)
	case bytes.HasPrefix(b, []byte("43")):
		if bytes.Contains(b, []byte(`"ok"`)) {
			c.fail(nil)
		} else {
			c.ctr.errorFrames.Add(1)
			c.ctr.lastError.Store(clip(b))
			c.fail(fmt.Errorf("refused: %s", clip(b)))
		}
	case bytes.HasPrefix(b, []byte("44")), bytes.HasPrefix(b, []byte("41")):
		c.ctr.errorFrames.Add(1)
		c.ctr.lastError.Store(clip(b))
	}
}

// onNats parses the NATS text protocol; a WebSocket frame may hold several
// operations or part of one.
func (c *Conn) onNats(b []byte) {
	c.buf = append(c.buf, b...)
	data := c.buf
	for len(data) > 0 {
		eol := bytes.Index(data, []byte("\r\n"))
		if eol < 0 {
			break
		}
		line := data[:eol]
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")):
			fields := bytes.Fields(line)
			size, err := strconv.Atoi(string(fields[len(fields)-1]))
			if err != nil {
				c.buf = c.buf[:0]
				return
			}
			if len(data) < eol+2+size+2 {
				goto keep
			}
			c.rec.Observe(data[eol+2 : eol+2+size])
			data = data[eol+2+size+2:]
			continue
		case bytes.Equal(line, []byte("PING")):
			c.write([]byte("PONG\r\n"))
		case bytes.Equal(line, []byte("PONG")):
			c.fail(nil)
		case bytes.HasPrefix(line, []byte("-ERR")):
			c.ctr.errorFrames.Add(1)
			c.ctr.lastError.Store(string(line))
			c.fail(errors.New(string(line)))
		}
		data = data[eol+2:]
	}
keep:
	n := copy(c.buf, data)
	c.buf = c.buf[:n]
}

// Recorder attributes each delivery to the step that published it.
type Recorder struct {
	start  time.Time
	origin int // messages of other origins are timed but not counted as this process's
	steps  [maxSteps]*Histogram
	recv   [maxSteps]atomic.Int64
	ctr    *Counters
}

const maxSteps = 64

func NewRecorder(ctr *Counters) *Recorder {
	r := &Recorder{start: time.Now(), ctr: ctr}
	for i := range r.steps {
		r.steps[i] = &Histogram{}
	}
	return r
}

// SetShared makes the recorder one of several processes sharing a load: time counts from
// the wall-clock epoch they all share (same machine, same clock), and deliveries of
// messages another process published are timed but counted only in the total.
func (r *Recorder) SetShared(origin int, epochMicros int64) {
	r.origin = origin
	if epochMicros > 0 {
		r.start = time.UnixMicro(epochMicros)
	}
}

func (r *Recorder) Now() int64 { return time.Since(r.start).Microseconds() }

// Observe records a bench message found in b; false if b holds none.
func (r *Recorder) Observe(b []byte) bool {
	ts, end, ok := intAfter(b, tsKey)
	if !ok {
		return false
	}
	tagged, _, ok := intAfter(b[end:], sKey)
	if !ok || tagged < 0 {
		return false
	}
	step, origin := tagged%maxSteps, int(tagged/maxSteps)
	lat := r.Now() - ts
	if lat < 0 {
		lat = 0
	}
	r.steps[step].Record(uint64(lat))
	if origin == r.origin {
		r.recv[step].Add(1)
	}
	r.ctr.received.Add(1)
	return true
}

// intAfter finds `"key"` followed by optional spaces, ':', optional spaces and an integer.
func intAfter(b, key []byte) (int64, int, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, 0, false
	}
	i += len(key)
	for i < len(b) && (b[i] == ' ' || b[i] == ':') {
		i++
	}
	var v int64
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + int64(b[i]-'0')
		i++
	}
	return v, i, i > start
}

// payload builds the bench message body: publish time, step and padding to `size` bytes.
func payload(dst []byte, ts int64, step int, size int) []byte {
	dst = dst[:0]
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendInt(dst, int64(step), 10)
	dst = append(dst, `,"pad":"`...)
	for len(dst) < size-2 {
		dst = append(dst, 'x')
	}
	dst = append(dst, `"}`...)
	return dst
}
