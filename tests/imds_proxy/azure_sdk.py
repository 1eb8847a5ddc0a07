"""Azure's official Python SDK as an application would use it: ManagedIdentityCredential
obtains a token (from IMDS, or from the App Service endpoint when IDENTITY_ENDPOINT and
IDENTITY_HEADER are set), and SecretClient reads one Key Vault secret with it.

    python azure_sdk.py VAULT_URL SECRET_NAME CA_FILE [CLIENT_ID]

Prints the secret's value on stdout, nothing else; errors go to stderr with exit 1.
Where the identity endpoint is comes from the environment, as in a pod:
AZURE_POD_IDENTITY_AUTHORITY_HOST (IMDS at another address), IDENTITY_ENDPOINT and
IDENTITY_HEADER (App Service), or neither (http://169.254.169.254).
"""

import sys

from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient


def main() -> int:
    vault_url, name, ca_file = sys.argv[1:4]
    client_id = sys.argv[4] if len(sys.argv) > 4 else None
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    # The test vault answers on 127.0.0.1, not under vault.azure.net, so the SDK's check
    # of the challenge's resource against the host is off, as with the Rust client.
    client = SecretClient(
        vault_url,
        credential,
        verify_challenge_resource=False,
        connection_verify=ca_file,
    )
    print(client.get_secret(name).value, end="")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # the class and message, for the test's failure text
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
