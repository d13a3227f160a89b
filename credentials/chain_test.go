package credentials

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
)

// TestChainRoleAssumesTheTargetWithTheBaseCredentials checks what
// ChainRole asks STS: AssumeRole for the target, signed with the base
// identity's key, for the one hour chained sessions allow, with the
// external ID and the session name chosen — and that the answer is cached.
func TestChainRoleAssumesTheTargetWithTheBaseCredentials(t *testing.T) {
	var mu sync.Mutex
	var forms []url.Values
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f, _ := url.ParseQuery(string(b))
		mu.Lock()
		forms, auths = append(forms, f), append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIACHAINED</AccessKeyId><SecretAccessKey>chained-secret</SecretAccessKey>
<SessionToken>chained-session</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::210987654321:assumed-role/pull/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult></AssumeRoleResponse>`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer srv.Close()
	base := awscreds.NewStaticCredentialsProvider("ASIABASE", "base-secret", "base-session")
	target := ChainedRole{RoleARN: "arn:aws:iam::210987654321:role/pull", ExternalID: "fleet-42"}

	for _, tc := range []struct {
		name, session, configured, want string
	}{
		{"webhook identity", "", "", defaultRoleSessionName},
		{"a ServiceAccount's", "apw@team-a.api", "", "apw@team-a.api"},
		{"configured", "apw@team-a.api", "eu-cluster", "eu-cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			forms, auths = nil, nil
			mu.Unlock()
			r := target
			r.SessionName = tc.configured
			p := ChainRole(AWSOptions{STSEndpoint: srv.URL, Region: "eu-west-1"}, base, r, tc.session)
			for range 2 {
				c, err := p.Retrieve(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if c.AccessKeyID != "ASIACHAINED" || c.SessionToken != "chained-session" {
					t.Fatalf("credentials %s, want the chained ones", c.AccessKeyID)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(forms) != 1 {
				t.Fatalf("%d STS calls for two retrievals, want 1 (cached)", len(forms))
			}
			f := forms[0]
			for k, want := range map[string]string{"Action": "AssumeRole", "RoleArn": target.RoleARN, "ExternalId": "fleet-42",
				"DurationSeconds": "3600", "RoleSessionName": tc.want} {
				if f.Get(k) != want {
					t.Errorf("%s = %q, want %q", k, f.Get(k), want)
				}
			}
			if !strings.Contains(auths[0], "Credential=ASIABASE/") {
				t.Errorf("signed with %q, want the base identity's key", auths[0])
			}
		})
	}
	t.Run("no external ID", func(t *testing.T) {
		mu.Lock()
		forms = nil
		mu.Unlock()
		if _, err := ChainRole(AWSOptions{STSEndpoint: srv.URL}, base, ChainedRole{RoleARN: target.RoleARN}, "").Retrieve(context.Background()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if _, sent := forms[0]["ExternalId"]; sent {
			t.Error("ExternalId sent though none is configured")
		}
	})
}
