package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// faultySecret is the secretName of instance faulty in the stack's
// configuration (harness.Stack.Config).
const faultySecret = "artifactory-pull-faulty"

// control serves the Artifactory emulator's fault switches on 127.0.0.1, so
// that whoever tries the demo can break the token exchange from a shell and
// heal it again:
//
//	POST /artifactory?status=401|403|500|<4xx/5xx>|0   the exchange answers that (0: normally)
//	POST /artifactory?down=true|false                  every Artifactory endpoint answers 503
//	POST /artifactory?delay=10s|0                      the exchange answers that late
//	POST /heal                                         all of the above cleared
//	GET  /                                             what is broken now
//
// Every answer is plain text saying what is broken now.
type control struct {
	s   *harness.Stack
	cs  kubernetes.Interface
	srv *http.Server
	// URL is http://127.0.0.1:<port>, a port picked free when it started.
	URL string

	mu     sync.Mutex
	status int
	body   string
	down   bool
	delay  time.Duration
}

// startControl serves the switches of s's Artifactory emulator on
// 127.0.0.1 until Close.
func startControl(s *harness.Stack) (*control, error) {
	cs, err := s.Cluster.Clientset(nil)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &control{s: s, cs: cs, URL: "http://" + l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /artifactory", c.artifactory)
	mux.HandleFunc("POST /heal", c.heal)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { c.answer(w, r, "\n"+c.usage()) })
	c.srv = &http.Server{Handler: c.localOnly(l.Addr().String(), mux), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = c.srv.Serve(l) }()
	return c, nil
}

// Close stops serving.
func (c *control) Close() { _ = c.srv.Close() }

// localOnly refuses what a web page could send to the loopback port: a
// request naming another host (DNS rebinding) or carrying an Origin
// (a cross-site form or fetch). curl sends neither.
func (c *control) localOnly(addr string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != addr || r.Header.Get("Origin") != "" {
			http.Error(w, "the demo's control endpoint answers curl on this machine only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *control) artifactory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status, down, delay := -1, "", time.Duration(-1)
	for k := range q {
		v := q.Get(k)
		var err error
		switch k {
		case "status":
			if status, err = strconv.Atoi(v); err == nil && status != 0 && (status < 400 || status > 599) {
				err = fmt.Errorf("want 0 (answer normally) or an error status 400-599")
			}
		case "down":
			var b bool
			b, err = strconv.ParseBool(v)
			down = strconv.FormatBool(b)
		case "delay":
			if delay, err = time.ParseDuration(v); err == nil && delay < 0 {
				err = fmt.Errorf("want a duration of 0 or more")
			}
		default:
			err = fmt.Errorf("unknown switch")
		}
		if err != nil {
			http.Error(w, fmt.Sprintf("%s=%q: %v\n\n%s", k, v, err, c.usage()), http.StatusBadRequest)
			return
		}
	}
	if len(q) == 0 {
		http.Error(w, "no switch given\n\n"+c.usage(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	if status >= 0 {
		c.status, c.body = status, artifactoryErrorBody(status, c.s.Emu.RoleARN)
		c.s.Emu.Artifactory.SetStatus(c.status, c.body)
	}
	if down != "" {
		c.down = down == "true"
		c.s.Emu.Artifactory.SetDown(c.down)
	}
	if delay >= 0 {
		c.delay = delay
		c.s.Emu.Artifactory.SetDelay(delay)
	}
	c.mu.Unlock()
	c.answer(w, r, "")
}

func (c *control) heal(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.status, c.body, c.down, c.delay = 0, "", false, 0
	c.s.Emu.Artifactory.SetStatus(0, "")
	c.s.Emu.Artifactory.SetDown(false)
	c.s.Emu.Artifactory.SetDelay(0)
	c.mu.Unlock()
	c.answer(w, r, "A pod of "+faultyImage(c.s)+" now gets its pull Secret "+faultySecret+". After repeated\n"+
		"failures the webhook backs off: if its warning says \"next attempt after\", retry after that time.\n")
}

// answer writes what is broken now, what to try, and note.
func (c *control) answer(w http.ResponseWriter, r *http.Request, note string) {
	c.mu.Lock()
	var broken []string
	if c.down {
		broken = append(broken, "Artifactory is down: every endpoint answers 503 (the token exchange and the registry's token realm)")
	}
	if c.status != 0 {
		broken = append(broken, fmt.Sprintf("the token exchange answers %d %s", c.status, c.body))
	}
	if c.delay > 0 {
		broken = append(broken, fmt.Sprintf("the token exchange answers after %s (the webhook gives up after its requestTimeout)", c.delay))
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(broken) == 0 {
		fmt.Fprintf(w, "Nothing is broken: Artifactory answers normally.\n%s", note)
		return
	}
	fmt.Fprintf(w, "Broken now:\n  - %s\n", strings.Join(broken, "\n  - "))
	if held := c.faultySecrets(r.Context()); len(held) > 0 {
		fmt.Fprintf(w, "Instance faulty holds a token already (Secret %s): its new pods reuse it and\n"+
			"exchange nothing, as main's do; the webhook's check command still exchanges and fails.\n", strings.Join(held, ", "))
	} else {
		fmt.Fprintf(w, "A new pod of %s is admitted without its pull Secret, with a warning\n"+
			"and a TokenExchangeFailed Event: instance faulty holds no token yet.\n", faultyImage(c.s))
	}
	fmt.Fprintf(w, "Heal: curl -X POST %s/heal\n%s", c.URL, note)
}

// faultySecrets are the namespace/name of instance faulty's Secrets: while
// one exists, the webhook holds a token for faulty and exchanges nothing.
func (c *control) faultySecrets(ctx context.Context) []string {
	list, err := c.cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + faultySecret})
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range list.Items {
		out = append(out, s.Namespace+"/"+s.Name)
	}
	slices.Sort(out)
	return out
}

func (c *control) usage() string {
	return fmt.Sprintf(`usage:
  curl -X POST '%[1]s/artifactory?status=401'   (or 403, 500; 0 answers normally)
  curl -X POST '%[1]s/artifactory?down=true'
  curl -X POST '%[1]s/artifactory?delay=10s'
  curl -X POST %[1]s/heal
  curl %[1]s/
`, c.URL)
}

// post sends one switch to the endpoint, as the printed curl commands do,
// and returns its answer.
func (c *control) post(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST %s: %s: %s", path, resp.Status, b)
	}
	return string(b), nil
}

// artifactoryErrorBody is an Artifactory error answer for status, with the
// message Artifactory gives in the case the status stands for here.
func artifactoryErrorBody(status int, roleARN string) string {
	var msg string
	switch status {
	case 0:
		return ""
	case http.StatusUnauthorized:
		msg = "no user is mapped to IAM role " + roleARN
	case http.StatusForbidden:
		msg = "expires_in exceeds the admin limit"
	case http.StatusInternalServerError:
		msg = "database connection pool exhausted"
	default:
		msg = http.StatusText(status)
		if msg == "" {
			msg = "error " + strconv.Itoa(status)
		}
	}
	type artifactoryError struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	b, _ := json.Marshal(struct {
		Errors []artifactoryError `json:"errors"`
	}{[]artifactoryError{{status, msg}}})
	return string(b)
}

// faultyImage is an image of instance faulty: no image lives there, its
// pods exist to show exchange failures.
func faultyImage(s *harness.Stack) string {
	return s.FaultyHost + "/" + harness.ImageRepo + ":" + harness.ImageTag
}

// shellWord quotes v for a POSIX shell when it needs it.
func shellWord(v string) string {
	if v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// showBreakAndHeal (--once) uses the control endpoint as the printed curl
// commands do: the exchange answers 401, a pod of instance faulty (which
// holds no token yet) is admitted without its Secret, with a warning and an
// Event naming Artifactory's reason, and after /heal the next one gets its
// Secret.
func showBreakAndHeal(ctx context.Context, s *harness.Stack, c *control, ns string) error {
	step("breaking the exchange through the demo's control endpoint: POST %s/artifactory?status=401", c.URL)
	answer, err := c.post(ctx, "/artifactory?status=401")
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(answer), "\n") {
		fmt.Printf("    | %s\n", line)
	}
	var warnings harness.Warnings
	cs, err := s.Cluster.Clientset(&warnings)
	if err != nil {
		return err
	}
	image := faultyImage(s)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "broken"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}}
	step("creating pod %s/broken with image %s (instance faulty, no token yet)", ns, image)
	got, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the pod (the webhook must fail open): %w", err)
	}
	if n := pullSecretNames(got); len(n) != 0 {
		return fmt.Errorf("the pod references %v although no token could be had", n)
	}
	const reason = "no user is mapped"
	ws := warnings.List()
	fmt.Printf("    admitted without a pull Secret; warning: %s\n", strings.Join(ws, " | "))
	if w := strings.Join(ws, "\n"); !strings.Contains(w, "faulty") || !strings.Contains(w, reason) {
		return fmt.Errorf("the admission warnings %q do not name instance faulty and %q", ws, reason)
	}
	note, err := waitEvent(ctx, cs, ns, "TokenExchangeFailed", reason)
	if err != nil {
		return err
	}
	if r := []rune(note); len(r) > 72 {
		note = string(r[:72]) + "…"
	}
	fmt.Printf("    Event TokenExchangeFailed in namespace %s: %s (the same cause)\n", ns, note)

	step("healing: POST %s/heal", c.URL)
	if _, err := c.post(ctx, "/heal"); err != nil {
		return err
	}
	pod.Name = "healed"
	if got, err = cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	names := pullSecretNames(got)
	fmt.Printf("    pod %s/healed: imagePullSecrets %v\n", ns, names)
	if !slices.Equal(names, []string{faultySecret}) {
		return fmt.Errorf("after healing, pod %s/healed references %v, want [%s]", ns, names, faultySecret)
	}
	return nil
}

// waitEvent waits for an Event of reason in ns whose message contains
// substr, found as `kubectl get events --field-selector reason=...` finds
// it, and returns its message.
func waitEvent(ctx context.Context, cs kubernetes.Interface, ns, reason, substr string) (string, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + reason})
		if err != nil {
			return "", err
		}
		for _, e := range list.Items {
			if strings.Contains(e.Message, substr) {
				return e.Message, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %s Event in namespace %s says %q", reason, ns, substr)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func pullSecretNames(p *corev1.Pod) []string {
	var names []string
	for _, r := range p.Spec.ImagePullSecrets {
		names = append(names, r.Name)
	}
	return names
}
