package pullsecret

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// dockerConfig is the .dockerconfigjson document the kubelet reads.
type dockerConfig struct {
	Auths map[string]dockerAuth `json:"auths"`
}

type dockerAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// Auth is base64("username:password"); the kubelet prefers it.
	Auth string `json:"auth"`
}

// DockerConfigJSON builds the .dockerconfigjson bytes with one entry per
// host, each carrying username and token. Wildcard hosts (*.suffix) are
// kept as keys: the kubelet matches glob keys.
func DockerConfigJSON(hosts []string, username string, token credentials.Token) ([]byte, error) {
	if len(hosts) == 0 {
		return nil, errors.New("building dockerconfigjson: no registry hosts")
	}
	if username == "" || token.IsZero() {
		return nil, errors.New("building dockerconfigjson: empty username or token")
	}
	auth := dockerAuth{
		Username: username,
		Password: token.Reveal(),
		Auth:     base64.StdEncoding.EncodeToString([]byte(username + ":" + token.Reveal())),
	}
	cfg := dockerConfig{Auths: make(map[string]dockerAuth, len(hosts))}
	for _, h := range hosts {
		cfg.Auths[h] = auth
	}
	return json.Marshal(cfg)
}

// ParseDockerConfigJSON reads the username and token stored for host. It
// falls back to the auth field when password is absent. Errors never quote
// the document, which holds the token.
func ParseDockerConfigJSON(b []byte, host string) (username string, token credentials.Token, err error) {
	var cfg dockerConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		// The decoder's message may quote content: keep only that it failed.
		return "", credentials.Token{}, errors.New("parsing dockerconfigjson: not valid JSON of the expected shape")
	}
	a, ok := cfg.Auths[host]
	if !ok {
		return "", credentials.Token{}, fmt.Errorf("parsing dockerconfigjson: no entry for host %q", host)
	}
	user, pass := a.Username, a.Password
	if pass == "" && a.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return "", credentials.Token{}, fmt.Errorf("parsing dockerconfigjson: auth of host %q is not base64", host)
		}
		var found bool
		if user, pass, found = strings.Cut(string(raw), ":"); !found {
			return "", credentials.Token{}, fmt.Errorf("parsing dockerconfigjson: auth of host %q is not user:token", host)
		}
	}
	if user == "" || pass == "" {
		return "", credentials.Token{}, fmt.Errorf("parsing dockerconfigjson: host %q has no username or token", host)
	}
	return user, credentials.NewToken(pass), nil
}
