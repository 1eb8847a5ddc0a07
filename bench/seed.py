"""Create K benchmark secrets bench/K/0 .. bench/K/(K-1) in LocalStack, and the same values
as SecureString parameters /bench/K/0 .. in Parameter Store (idempotent)."""
import sys

import boto3

endpoint, counts = sys.argv[1], [int(k) for k in sys.argv[2:]]
client = boto3.client(
    "secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id="test", aws_secret_access_key="test",
)
ssm = boto3.client(
    "ssm", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id="test", aws_secret_access_key="test",
)
for k in counts:
    for i in range(k):
        name = f"bench/{k}/{i}"
        value = f'{{"username":"app{i}","password":"bench-password-{k}-{i}-0123456789abcdef"}}'
        try:
            client.create_secret(Name=name, SecretString=value)
        except client.exceptions.ResourceExistsException:
            pass
        ssm.put_parameter(Name=f"/{name}", Value=value, Type="SecureString", Overwrite=True)
