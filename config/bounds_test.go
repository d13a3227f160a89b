package config

import (
	"strings"
	"testing"
	"time"
)

// Every bound the configuration checks, at the bound and just past it:
// each error names its field, and each value at the bound is accepted.
func TestValidateBoundsExactly(t *testing.T) {
	ttl := func(d string) string { return "  tokenTTL: " + d + "\n" }
	cases := []struct {
		name, doc string
		field     string // "" = accepted
	}{
		{"threshold 0 is unset: the default", minimal + "refreshThreshold: 0\n", ""},
		{"threshold below 0", minimal + "refreshThreshold: -0.01\n", "refreshThreshold"},
		{"threshold 1", minimal + "refreshThreshold: 1\n", "refreshThreshold"},
		{"threshold just below 1", minimal + "refreshThreshold: 0.99\n", ""},
		{"requestTimeout 100ms", minimal + "requestTimeout: 100ms\nbackoffCap: 1s\n", ""},
		{"requestTimeout 99ms", minimal + "requestTimeout: 99ms\n", "requestTimeout"},
		{"requestTimeout 25s", minimal + "requestTimeout: 25s\n", ""},
		{"requestTimeout past 25s", minimal + "requestTimeout: 25001ms\n", "requestTimeout"},
		{"backoffCap 1s", minimal + "backoffCap: 1s\n", ""},
		{"backoffCap 999ms", minimal + "backoffCap: 999ms\n", "backoffCap"},
		{"backoffCap 1h", minimal + ttl("5h") + "backoffCap: 1h\n", ""},
		{"backoffCap past 1h", minimal + ttl("5h") + "backoffCap: 3601s\n", "backoffCap"},
		{"stsEndpoint without host", minimal + "aws: {stsEndpoint: 'http://'}\n", "aws.stsEndpoint"},
		{"stsEndpoint not http", minimal + "aws: {stsEndpoint: 'ftp://sts.example'}\n", "aws.stsEndpoint"},
		{"stsEndpoint http", minimal + "aws: {stsEndpoint: 'http://127.0.0.1:1'}\n", ""},
		{"tokenTTL at its minimum", minimal + ttl("10s") + "requestTimeout: 2s\nbackoffCap: 1s\n", ""},
		{"tokenTTL below its minimum", minimal + ttl("9s") + "requestTimeout: 2s\nbackoffCap: 1s\n", "instances[0].tokenTTL"},
		{"refresh window = requestTimeout", minimal + ttl("20s") + "backoffCap: 4s\n", ""},
		{"refresh window = backoffCap", minimal + ttl("20m"), "not more than backoffCap"},
		{"refresh window below requestTimeout", minimal + ttl("16s") + "backoffCap: 1s\n", "less than requestTimeout"},
		{"exchangeTimeout = requestTimeout", minimal + "  exchangeTimeout: 5s\n", ""},
		{"exchangeTimeout past requestTimeout", minimal + "  exchangeTimeout: 5001ms\n", "instances[0].exchangeTimeout"},
		{"exchangeTimeout negative", minimal + "  exchangeTimeout: -1s\n", "instances[0].exchangeTimeout"},
		{"host with only a port", strings.Replace(minimal, `[example.jfrog.io,`, `[":5000",`, 1), "instances[0].registryHosts[0]"},
		{"localhost with a port", strings.Replace(minimal, `[example.jfrog.io,`, `["localhost:5000",`, 1), ""},
		{"IPv4 with a port", strings.Replace(minimal, `[example.jfrog.io,`, `["10.0.0.1:5000",`, 1), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tc.field != "" && err == nil:
				t.Error("accepted")
			case tc.field != "" && !strings.Contains(err.Error(), tc.field):
				t.Errorf("error %q does not name %q", err, tc.field)
			}
		})
	}
}

// The failover check: the refresh window must exceed the lease duration
// plus requestTimeout, strictly.
func TestCheckFailoverAtTheBound(t *testing.T) {
	c, err := Parse([]byte(minimal)) // 3h × 0.25 = 45 min window, requestTimeout 5s
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckFailover(45*time.Minute - 5*time.Second); err == nil || !strings.Contains(err.Error(), "instances[0].tokenTTL") {
		t.Errorf("window = lease + requestTimeout: %v; want it refused", err)
	}
	if err := c.CheckFailover(45*time.Minute - 6*time.Second); err != nil {
		t.Errorf("window a second past lease + requestTimeout: %v", err)
	}
}
