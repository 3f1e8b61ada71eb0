"""rlaif's reward side, installed as `rlaif_rewards`: tamper-proof unit tests (`unit_tests`), rubrics, judges
(`judge`, `providers`, `prompts`, `verdicts`), their cache, limits and cost, composition (`components`), and the
service in Ray actors or over HTTP (`service`, `http_front`)."""
