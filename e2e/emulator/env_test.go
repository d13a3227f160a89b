package emulator

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func TestStartWiresBothIdentityModesToArtifactory(t *testing.T) {
	iss := newOIDCIssuer(t)
	env, err := Start(t.Context(), Options{Issuer: iss.srv.URL, Subjects: []string{testSubject}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)

	irsa, err := stsClient(env.STS, nil).AssumeRoleWithWebIdentity(t.Context(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(env.RoleARN),
		RoleSessionName:  aws.String("irsa"),
		WebIdentityToken: aws.String(iss.sign(t, iss.claims(testSubject, time.Now()), iss.key)),
	})
	if err != nil {
		t.Fatalf("IRSA: %v", err)
	}
	podIdentity, err := endpointcreds.New(env.PodIdentity.URL(), func(o *endpointcreds.Options) {
		o.AuthorizationToken = env.PodIdentityToken
	}).Retrieve(t.Context())
	if err != nil {
		t.Fatalf("Pod Identity: %v", err)
	}

	for name, c := range map[string]Creds{
		"irsa": {
			AccessKeyID:     aws.ToString(irsa.Credentials.AccessKeyId),
			SecretAccessKey: aws.ToString(irsa.Credentials.SecretAccessKey),
			SessionToken:    aws.ToString(irsa.Credentials.SessionToken),
		},
		"pod identity": {
			AccessKeyID:     podIdentity.AccessKeyID,
			SecretAccessKey: podIdentity.SecretAccessKey,
			SessionToken:    podIdentity.SessionToken,
		},
	} {
		t.Run(name+" credentials exchange for the default user", func(t *testing.T) {
			f := &exchangeFixture{art: env.Artifactory}
			status, body := f.exchange(t, TokenExchangePath, signGetCallerIdentity(t, c, "sts.amazonaws.com", "*", time.Now()), `{"expires_in": 600}`)
			var tok tokenAnswer
			if status != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil || tok.Username != DefaultUser {
				t.Fatalf("exchange: %d %s", status, body)
			}
		})
	}
}
