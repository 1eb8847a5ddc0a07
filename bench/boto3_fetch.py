"""What a Python init container does: one process, one GetSecretValue per secret."""
import os
import sys

import boto3

out = sys.argv[1]
client = boto3.client("secretsmanager", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for index, secret_id in enumerate(sys.argv[2:]):
    value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    with open(os.path.join(out, str(index)), "w") as handle:
        handle.write(value)
