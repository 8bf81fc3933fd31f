// CIRCL tkn20 CP-ABE timings at N attributes (AND policy), for ehr-abe's peers.json.
package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cloudflare/circl/abe/cpabe/tkn20"
)

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	runs, _ := strconv.Atoi(os.Args[2])
	pp, msk, err := tkn20.Setup(rand.Reader)
	if err != nil {
		panic(err)
	}
	terms := []string{}
	m := map[string]string{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("a%02d", i)
		terms = append(terms, name+": 1")
		m[name] = "1"
	}
	policy := tkn20.Policy{}
	if err := policy.FromString(strings.Join(terms, " and ")); err != nil {
		panic(err)
	}
	attrs := tkn20.Attributes{}
	attrs.FromMap(m)
	msg := make([]byte, 1024)
	var kg, enc, dec []float64
	key, _ := msk.KeyGen(rand.Reader, attrs)
	ct, _ := pp.Encrypt(rand.Reader, policy, msg)
	for r := 0; r < runs; r++ {
		t := time.Now()
		key, err = msk.KeyGen(rand.Reader, attrs)
		kg = append(kg, float64(time.Since(t).Microseconds())/1000)
		if err != nil {
			panic(err)
		}
		t = time.Now()
		ct, err = pp.Encrypt(rand.Reader, policy, msg)
		enc = append(enc, float64(time.Since(t).Microseconds())/1000)
		if err != nil {
			panic(err)
		}
		t = time.Now()
		pt, err := key.Decrypt(ct)
		dec = append(dec, float64(time.Since(t).Microseconds())/1000)
		if err != nil || len(pt) != len(msg) {
			panic(err)
		}
	}
	fmt.Printf("{\"library\": \"circl tkn20\", \"n_attrs\": %d, \"runs\": %d, \"keygen_ms\": %.2f, \"encrypt_ms\": %.2f, \"decrypt_ms\": %.2f}\n", n, runs, median(kg), median(enc), median(dec))
}
