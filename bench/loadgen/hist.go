package main

import (
	"math/bits"
	"sync/atomic"
)

// Histogram is a lock-free log-linear histogram of microseconds (about 1.5 %
// precision, up to ~100 s), cheap enough to record every delivery.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	total  atomic.Uint64
	max    atomic.Uint64
}

const (
	histSub     = 64
	histLinear  = 2 * histSub
	histBuckets = histLinear + 24*histSub
)

func histIndex(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	shift := bits.Len64(v) - 7 // v>>shift in [64, 127]
	i := histLinear + (shift-1)*histSub + int(v>>shift) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

func histValue(i int) float64 {
	if i < histLinear {
		return float64(i)
	}
	shift := (i-histLinear)/histSub + 1
	sub := (i-histLinear)%histSub + histSub
	low := uint64(sub) << shift
	high := uint64(sub+1) << shift
	return float64(low+high) / 2
}

func (h *Histogram) Record(us uint64) {
	h.counts[histIndex(us)].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

func (h *Histogram) Count() uint64 { return h.total.Load() }

// Quantile returns the q-quantile in microseconds.
func (h *Histogram) Quantile(q float64) float64 {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := 0; i < histBuckets; i++ {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := histValue(i)
			if m := float64(h.max.Load()); v > m {
				return m
			}
			return v
		}
	}
	return float64(h.max.Load())
}

// Summary in milliseconds.
func (h *Histogram) Summary() map[string]float64 {
	ms := func(us float64) float64 { return round3(us / 1000) }
	return map[string]float64{
		"p50":   ms(h.Quantile(0.50)),
		"p90":   ms(h.Quantile(0.90)),
		"p99":   ms(h.Quantile(0.99)),
		"p99_9": ms(h.Quantile(0.999)),
		"max":   ms(float64(h.max.Load())),
		"count": float64(h.total.Load()),
	}
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}
