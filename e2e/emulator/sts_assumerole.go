package emulator

import (
	"crypto/subtle"
	"encoding/xml"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// assumeRoleTrust is the part of a role's trust policy that governs sts:AssumeRole: the role
// principals it names ({"Principal": {"AWS": [<role ARN>...]}}) and, when externalID is set, the
// condition {"StringEquals": {"sts:ExternalId": externalID}}.
type assumeRoleTrust struct {
	externalID string
	sources    []string
}

// unsupportedAssumeRoleParams are AssumeRole parameters whose effect the emulator does not model
// (session policies, tags, MFA, source identity, trusted contexts). It refuses them rather than
// ignore them: ignoring a session policy or an MFA code would grant what STS would not.
var unsupportedAssumeRoleParams = []string{
	"Policy", "PolicyArns.", "Tags.", "TransitiveTagKeys.", "SerialNumber", "TokenCode", "SourceIdentity", "ProvidedContexts.",
}

// SetAssumeTrust replaces the sts:AssumeRole statement of targetRoleArn's trust policy: the role
// sessions of sourceRoleArns (IAM role ARNs, compared exactly) may assume it, and when externalID is
// not empty only if they pass that ExternalId. No sources removes the statement, so no session may
// assume targetRoleArn with AssumeRole. Web-identity trust (SetTrust) is separate.
func (s *STS) SetAssumeTrust(targetRoleArn, externalID string, sourceRoleArns ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(sourceRoleArns) == 0 {
		delete(s.assume, targetRoleArn)
		return
	}
	s.assume[targetRoleArn] = assumeRoleTrust{externalID: externalID, sources: slices.Clone(sourceRoleArns)}
}

// assumeTrusts reports whether targetRoleArn's trust policy lets a session of sourceRoleArn assume
// it with externalID (empty when the request carried none).
func (s *STS) assumeTrusts(targetRoleArn, sourceRoleArn, externalID string) bool {
	s.mu.Lock()
	trust, ok := s.assume[targetRoleArn]
	s.mu.Unlock()
	if !ok || !slices.Contains(trust.sources, sourceRoleArn) {
		return false
	}
	return trust.externalID == "" || subtle.ConstantTimeCompare([]byte(externalID), []byte(trust.externalID)) == 1
}

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"AssumeRoleResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		AssumedRoleUser struct {
			Arn           string
			AssumedRoleID string `xml:"AssumedRoleId"`
		}
		Credentials xmlCredentials
	} `xml:"AssumeRoleResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

func validationError(format string, args ...any) error {
	return senderError(http.StatusBadRequest, "ValidationError", format, args...)
}

// assumeRole implements Action=AssumeRole for callers holding emulator-issued role session
// credentials, which makes every call role chaining: the request must be signed (as
// GetCallerIdentity), the target role's trust policy must name the caller's role (and its
// ExternalId condition, if any, must hold), and the session lasts at most an hour.
func (s *STS) assumeRole(r *http.Request, body []byte, p url.Values) (any, error) {
	caller, err := s.authenticateSigned(r, body)
	if err != nil {
		return nil, err
	}
	for name := range p {
		for _, unsupported := range unsupportedAssumeRoleParams {
			if name == unsupported || (strings.HasSuffix(unsupported, ".") && strings.HasPrefix(name, unsupported)) {
				return nil, validationError("the STS emulator does not support the AssumeRole parameter %s", name)
			}
		}
	}
	roleArn, session := p.Get("RoleArn"), p.Get("RoleSessionName")
	if err := validateAssumeRoleParams(p); err != nil {
		return nil, err
	}
	ttl := maxChainedSessionSecs * time.Second
	if d := p.Get("DurationSeconds"); d != "" {
		n, _ := strconv.Atoi(d) // validated
		ttl = time.Duration(n) * time.Second
	}
	if !s.assumeTrusts(roleArn, caller.RoleARN, p.Get("ExternalId")) {
		return nil, senderError(http.StatusForbidden, "AccessDenied",
			"User: %s is not authorized to perform: sts:AssumeRole on resource: %s", caller.AssumedRoleARN, roleArn)
	}
	c, err := s.issue(roleArn, session, ttl)
	if err != nil {
		return nil, validationError("%v", err)
	}
	var resp assumeRoleResponse
	resp.Xmlns = stsNamespace
	resp.Result.AssumedRoleUser.Arn = c.AssumedRoleARN
	resp.Result.AssumedRoleUser.AssumedRoleID = c.UserID
	resp.Result.Credentials = xmlCredentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Expiration:      c.Expiration.Format(time.RFC3339),
	}
	resp.RequestID = requestID()
	return resp, nil
}

// validateAssumeRoleParams checks RoleArn, RoleSessionName, ExternalId and DurationSeconds against
// STS's constraints, answering its ValidationError wording. A chained session may not ask for more
// than an hour.
func validateAssumeRoleParams(p url.Values) error {
	constraint := func(field, value, rule string) error {
		return validationError("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, field, rule)
	}
	roleArn := p.Get("RoleArn")
	switch {
	case !p.Has("RoleArn"):
		return validationError("1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null")
	case len(roleArn) < 20:
		return constraint("roleArn", roleArn, "Member must have length greater than or equal to 20")
	case len(roleArn) > 2048:
		return constraint("roleArn", roleArn, "Member must have length less than or equal to 2048")
	case !roleARNRE.MatchString(roleArn):
		return validationError("%s is invalid", roleArn)
	}

	session := p.Get("RoleSessionName")
	switch {
	case !p.Has("RoleSessionName"):
		return validationError("1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null")
	case len(session) < 2:
		return constraint("roleSessionName", session, "Member must have length greater than or equal to 2")
	case len(session) > 64:
		return constraint("roleSessionName", session, "Member must have length less than or equal to 64")
	case !roleSessionCharRE.MatchString(session):
		return constraint("roleSessionName", session, `Member must satisfy regular expression pattern: [\w+=,.@-]*`)
	}

	if p.Has("ExternalId") {
		id := p.Get("ExternalId")
		switch {
		case len(id) < 2:
			return constraint("externalId", id, "Member must have length greater than or equal to 2")
		case len(id) > 1224:
			return constraint("externalId", id, "Member must have length less than or equal to 1224")
		case !externalIDCharRE.MatchString(id):
			return constraint("externalId", id, `Member must satisfy regular expression pattern: [\w+=,.@:\/-]*`)
		}
	}

	if p.Has("DurationSeconds") {
		d := p.Get("DurationSeconds")
		n, err := strconv.Atoi(d)
		switch {
		case err != nil:
			return validationError("Value '%s' for parameter DurationSeconds is invalid: not an integer", d)
		case n < minSessionSeconds:
			return constraint("durationSeconds", d, "Member must have value greater than or equal to 900")
		case n > maxSessionSeconds:
			return constraint("durationSeconds", d, "Member must have value less than or equal to 43200")
		case n > maxChainedSessionSecs:
			return validationError("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
		}
	}
	return nil
}
