"""rlaif's built-in environments, installed as `rlaif_environments`. Each is written exactly as a third-party
plugin would be: it imports only the environment interface (`rlaif.env`), the types, and the graders."""
