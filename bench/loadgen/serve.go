package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/gorilla/websocket"
)

// serve runs "ceiling", a minimal fan-out server in Go speaking the subset of
// the gateway's JSON protocol the load generator uses (token at the upgrade,
// unverified; subscribe; publish). It does no authorization, no storage and
// no history: it exists so that the load generator's own ceiling can be
// measured against a server that costs as little as possible.
func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback)")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()
	hub := &ceilingHub{rooms: map[string]map[*ceilingConn]struct{}{}}
	upgrader := websocket.Upgrader{
		ReadBufferSize: 2048, WriteBufferSize: 4096,
		Subprotocols: []string{"neurelay.v1.json"},
		CheckOrigin:  func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &ceilingConn{ws: ws, out: make(chan []byte, 4096)}
		go c.writeLoop()
		c.out <- []byte(`{"type":"authenticated","user":"bench","expires_at":0}`)
		hub.readLoop(c)
	})
	http.Serve(ln, mux)
}

type ceilingConn struct {
	ws  *websocket.Conn
	out chan []byte
}

func (c *ceilingConn) writeLoop() {
	for data := range c.out {
		if c.ws.WriteMessage(websocket.TextMessage, data) != nil {
			break
		}
	}
	c.ws.Close()
}

type ceilingHub struct {
	mu    sync.RWMutex
	rooms map[string]map[*ceilingConn]struct{}
}

func (h *ceilingHub) readLoop(c *ceilingConn) {
	var joined []string
	defer func() {
		h.mu.Lock()
		for _, ch := range joined {
			delete(h.rooms[ch], c)
		}
		h.mu.Unlock()
	}()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var f struct {
			Type    string          `json:"type"`
			Channel string          `json:"channel"`
			ID      any             `json:"id"`
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch f.Type {
		case "subscribe":
			h.mu.Lock()
			if h.rooms[f.Channel] == nil {
				h.rooms[f.Channel] = map[*ceilingConn]struct{}{}
			}
			h.rooms[f.Channel][c] = struct{}{}
			h.mu.Unlock()
			joined = append(joined, f.Channel)
			reply, _ := json.Marshal(map[string]any{"type": "subscribed", "channel": f.Channel, "id": f.ID, "seq": 0, "recovered": true})
			c.out <- reply
		case "publish":
			var msg bytes.Buffer
			msg.WriteString(`{"type":"message","channel":`)
			ch, _ := json.Marshal(f.Channel)
			msg.Write(ch)
			msg.WriteString(`,"seq":0,"timestamp":0,"payload":`)
			msg.Write(f.Payload)
			msg.WriteByte('}')
			frame := msg.Bytes()
			h.mu.RLock()
			for sub := range h.rooms[f.Channel] {
				select {
				case sub.out <- frame:
				default: // slow consumer: drop, as a real server would disconnect
				}
			}
			h.mu.RUnlock()
			c.out <- []byte(`{"type":"published","channel":"","seq":0}`)
		}
	}
}
