package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

const clockTicks = 100 // USER_HZ on Linux

// cpuSeconds reads utime+stime of a process (pid 0: this process).
func cpuSeconds(pid int) float64 {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// The command name may hold spaces; fields are counted after the last ')'.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0
	}
	fields := strings.Fields(string(data[end+2:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks
}

// rssBytes reads VmRSS of a process (pid 0: this process).
func rssBytes(pid int) int64 {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// ProcSample is the CPU time and RSS of the watched processes at one moment.
type ProcSample struct {
	at   time.Time
	cpu  map[string]float64
	rss  map[string]int64
	self float64
}

func sampleProcs(pids map[string]int) ProcSample {
	s := ProcSample{at: time.Now(), cpu: map[string]float64{}, rss: map[string]int64{}, self: cpuSeconds(0)}
	for name, pid := range pids {
		s.cpu[name] = cpuSeconds(pid)
		s.rss[name] = rssBytes(pid)
	}
	return s
}

// procDelta: per process CPU use (cores) over the interval and RSS at its end.
func procDelta(a, b ProcSample) map[string]any {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		wall = 1e-9
	}
	servers := map[string]any{}
	for name := range b.cpu {
		servers[name] = map[string]any{
			"cpu":       round3((b.cpu[name] - a.cpu[name]) / wall),
			"rss_bytes": b.rss[name],
		}
	}
	return map[string]any{
		"servers":     servers,
		"loadgen_cpu": round3((b.self - a.self) / wall),
		"seconds":     round3(wall),
	}
}
