#!/bin/sh
# The curl contenders of bench/latency.sh: what a hand-written init script does. One curl
# process proves the identity, then one curl process reads every secret over one kept-alive
# connection, one request after another (AWS: 20 secrets per BatchGetSecretValue call, the
# pattern secret-sidecar uses). Each answer goes to a file in OUT.
#
#   curl.sh aws OUT ID...          AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL_SECRETS_MANAGER,
#                                  AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE
#   curl.sh azure OUT URL...       AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID,
#                                  AZURE_FEDERATED_TOKEN_FILE
#   curl.sh gcp-metadata OUT URL... GCE_METADATA_HOST
#   curl.sh gcp-federation OUT URL... GCP_STS_URL, GCP_AUDIENCE, GCP_SUBJECT_TOKEN_FILE
#
# CURL_CA_BUNDLE names the CA that the benchmark's TLS servers use.
set -eu
store=$1 out=$2
shift 2

# One value out of a JSON or XML answer, without a JSON parser (as such scripts do).
json_field() { sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p"; }
xml_field() { tr -d '\n' | sed -n "s:.*<$1>\([^<]*\)</$1>.*:\1:p"; }

# One request block per secret for `curl -K -`, `next` between them.
config() { # $1 = one line of extra options for every request, then one URL or body each
    extra=$1 n=0
    shift
    for item in "$@"; do
        [ "$n" = 0 ] || echo next
        printf 'silent\nshow-error\nfail\noutput = "%s/%d"\n%s\n' "$out" "$n" "$extra"
        case "$store" in
            aws) printf 'data = "%s"\nurl = "%s/"\n' "$(printf '%s' "$item" | sed 's/"/\\"/g')" "$AWS_ENDPOINT_URL_SECRETS_MANAGER" ;;
            *) printf 'url = "%s"\n' "$item" ;;
        esac
        n=$((n + 1))
    done
}

case "$store" in
    aws)
        answer="$(curl -sS --fail "$AWS_ENDPOINT_URL_STS/" \
            -d Action=AssumeRoleWithWebIdentity -d Version=2011-06-15 \
            --data-urlencode "RoleArn=$AWS_ROLE_ARN" -d RoleSessionName=bench-curl \
            --data-urlencode "WebIdentityToken@$AWS_WEB_IDENTITY_TOKEN_FILE")"
        key="$(printf '%s' "$answer" | xml_field AccessKeyId)"
        secret="$(printf '%s' "$answer" | xml_field SecretAccessKey)"
        session="$(printf '%s' "$answer" | xml_field SessionToken)"
        batches=""
        while [ $# -gt 0 ]; do
            list="" i=0
            while [ $# -gt 0 ] && [ $i -lt 20 ]; do
                list="$list${list:+,}\"$1\""
                shift
                i=$((i + 1))
            done
            batches="$batches{\"SecretIdList\":[$list]}
"
        done
        IFS='
'
        # shellcheck disable=SC2086
        config "$(printf 'aws-sigv4 = "aws:amz:us-east-1:secretsmanager"\nuser = "%s:%s"\nheader = "x-amz-security-token: %s"\nheader = "Content-Type: application/x-amz-json-1.1"\nheader = "X-Amz-Target: secretsmanager.BatchGetSecretValue"' \
            "$key" "$secret" "$session")" $batches | curl -K -
        ;;
    azure)
        answer="$(curl -sS --fail "${AZURE_AUTHORITY_HOST%/}/$AZURE_TENANT_ID/oauth2/v2.0/token" \
            -d grant_type=client_credentials --data-urlencode "client_id=$AZURE_CLIENT_ID" \
            --data-urlencode "scope=https://vault.azure.net/.default" \
            --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
            --data-urlencode "client_assertion@$AZURE_FEDERATED_TOKEN_FILE")"
        token="$(printf '%s' "$answer" | json_field access_token)"
        config "header = \"Authorization: Bearer $token\"" "$@" | curl -K -
        ;;
    gcp-metadata)
        answer="$(curl -sS --fail -H 'Metadata-Flavor: Google' \
            "http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token")"
        token="$(printf '%s' "$answer" | json_field access_token)"
        config "header = \"Authorization: Bearer $token\"" "$@" | curl -K -
        ;;
    gcp-federation)
        answer="$(curl -sS --fail "$GCP_STS_URL" \
            --data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:token-exchange" \
            --data-urlencode "audience=$GCP_AUDIENCE" \
            --data-urlencode "scope=https://www.googleapis.com/auth/cloud-platform" \
            --data-urlencode "requested_token_type=urn:ietf:params:oauth:token-type:access_token" \
            --data-urlencode "subject_token_type=urn:ietf:params:oauth:token-type:jwt" \
            --data-urlencode "subject_token@$GCP_SUBJECT_TOKEN_FILE")"
        token="$(printf '%s' "$answer" | json_field access_token)"
        config "header = \"Authorization: Bearer $token\"" "$@" | curl -K -
        ;;
    *) echo "curl.sh: unknown store $store" >&2; exit 2 ;;
esac
