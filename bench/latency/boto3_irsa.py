"""The boto3 contender of bench/latency.sh: what a Python init container does, in one
process. Endpoints, region, CA bundle and the IRSA web identity (AWS_ROLE_ARN,
AWS_WEB_IDENTITY_TOKEN_FILE) all come from the environment, as in a pod; one
GetSecretValue per secret, one after another, each value written to a file."""
import os
import sys

import boto3

out = sys.argv[1]
client = boto3.client("secretsmanager")
for index, secret_id in enumerate(sys.argv[2:]):
    value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    with open(os.path.join(out, str(index)), "w") as handle:
        handle.write(value)
