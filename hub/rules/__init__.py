"""Rules: turn stored reports, rejections and the passage of time into graded alerts (1-5).

One rule per module; hub/rules/engine.py sets the order they run in. docs/alerts.md documents
every rule and every [rules] key.
"""

from hub.rules.engine import RuleEngine
from hub.rules.settings import RulesConfig, load_rules, parse_rules

__all__ = ["RuleEngine", "RulesConfig", "load_rules", "parse_rules"]
