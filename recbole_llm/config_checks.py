"""The checks :class:`recbole_llm.config.Config` runs while it is built, before any data, file
or LLM work: secrets, unknown keys, each key's declared type, the allowed values of our choices,
RecBole's numbers and ``valid_metric``, and that the run can write where it will.

:class:`ConfigChecks` is mixed into Config; each check fails with a :class:`ConfigError` that
names the key and where it was set.
"""

import os
import tempfile

from recbole_llm import keys
from recbole_llm.data.prepare import PREPARERS, is_prepared
from recbole_llm.errors import UserError, error_message
from recbole_llm.model.layers import config_choice
from recbole_llm.model.lookup import closest_names
from recbole_llm.semantics.files import semantics_dir

#: RecBole keys that must be numbers (:data:`recbole_llm.keys.NUMBER`). RecBole keeps
#: ``--epochs=abc`` as the string "abc" and fails only deep inside training; these are checked
#: when the config is built.
NUMBER_KEYS = {
    key: int if keys.KEYS[key].type == "int" else float for key in keys.with_role(keys.NUMBER)
}


class ConfigError(UserError):
    """A config file or config value that cannot be used; the message names the file or key."""


class MissingConfigKeyError(ConfigError, KeyError):
    """A key that must be given is missing (also a KeyError, as a missing key is in RecBole)."""


class ConfigChecks:
    """The value checks of :class:`recbole_llm.config.Config` (a mixin: it reads the Config's
    dictionaries and ``_origin``)."""

    def _check_secrets(self):
        """Refuse a secret in the config, naming the key but never its value."""
        for key, value in self.external_config_dict.items():
            if keys.is_secret_key(key) and value not in (None, ""):
                raise ConfigError(
                    f"Config key '{key}' ({self._origin(key)}) looks like a secret and is "
                    "refused: config is logged, written to TensorBoard and saved in "
                    f"checkpoints. Instead, {keys.SECRET_ADVICE}. (The value is not shown.)"
                )
        env = self.external_config_dict.get("llm_api_key_env")
        if env is not None and not keys.is_env_name(env):
            raise ConfigError(
                f"llm_api_key_env ({self._origin('llm_api_key_env')}) must be the NAME of the "
                "environment variable that holds the API key (letters, digits and underscores, "
                "e.g. OPENAI_API_KEY), never the key itself; the value given is not a variable "
                "name (it is not shown)."
            )

    def _check_known_keys(self, root):
        """Fail on keys no YAML declares (typos such as ``learnin_rate``), unless
        ``strict_keys`` is False; the message gives the closest known names."""
        if self.external_config_dict.get("strict_keys", True) is False:
            return
        known = keys.recbole_keys() | keys.our_keys(root) | set(self.internal_config_dict)
        unknown = [key for key in self.external_config_dict if key not in known]
        if not unknown:
            return
        problems = []
        for key in unknown:
            close = closest_names(key, known, n=3)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            problems.append(f"'{key}' ({self._origin(key)}{hint})")
        from_command_line = any(key in self.cmd_config_dict for key in unknown)
        raise ConfigError(
            f"Unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(problems)}. "
            "Keys are those RecBole and recbole_llm declare (their YAML defaults); for keys "
            "of your own, e.g. a custom model's, set strict_keys: False (--strict_keys=False)."
            + (
                " (RecBole's Config reads every --key=value of the process's command line.)"
                if from_command_line
                else ""
            )
        )

    def _check_types(self):
        """Fail now, naming the key, if a value does not have the type its YAML declares
        (``# (int)``). A number on the command line for a string key is taken as a string."""
        final = self.final_config_dict
        for key, tag in self._declared_types.items():
            if key not in final:
                continue
            value = final[key]
            if (
                tag == "str"
                and key in self.cmd_config_dict
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                final[key] = value = str(self.cmd_config_dict[key])
            problem = keys.type_error(key, value, tag, self.internal_config_dict.get(key))
            if problem:
                where = f" ({self._origin(key)})" if key in self.external_config_dict else ""
                raise ConfigError(f"Config key '{key}'{where} {problem}.")

    def _check_choices(self):
        """Fail now, naming the key and the allowed values, if a choice key has another value:
        our keys' (:data:`recbole_llm.keys.CHOICES`) and those the model (and its backbone)
        declare."""
        choices = dict(keys.CHOICES)
        for model_class in (self.backbone_class, self.model_class):
            choices.update(getattr(model_class, "config_choices", None) or {})
        for key, allowed in choices.items():
            if key in self.final_config_dict:
                try:
                    config_choice(key, self.final_config_dict[key], allowed)
                except UserError as err:
                    where = f" ({self._origin(key)})" if key in self.external_config_dict else ""
                    raise ConfigError(f"{error_message(err)}{where}.") from None

    def _check_writable(self):
        """Fail now, not after the LLM step, if the run must write where it cannot: a known
        dataset to prepare into ``data_path``, or semantic files to make in their folder."""
        folder, dataset = self["data_path"], self["dataset"]
        if dataset in PREPARERS and self["auto_prepare"] and not is_prepared(folder, dataset):
            blocked = _unwritable(folder)
            if blocked:
                raise ConfigError(
                    f"data_path: dataset '{dataset}' is to be prepared in '{folder}', but "
                    f"'{blocked}' is not a writable folder; point data_path at a writable "
                    "folder or make it writable."
                )
        makes_semantics = getattr(self.model_class, "semantics", None) is not None
        if makes_semantics and self["auto_semantics"] and self["semantics_required"]:
            target = semantics_dir(self)
            blocked = _unwritable(target)
            if blocked:
                raise ConfigError(
                    f"data_path: {self.model} writes its semantic files to '{target}', but "
                    f"'{blocked}' is not a writable folder. Make it writable, set semantics_dir "
                    "(or data_path) to a writable folder, or, if the semantic files are already "
                    "there, set auto_semantics: False."
                )

    def _check_numbers(self):
        """Fail now, naming the key, if a key of :data:`NUMBER_KEYS` is not a number."""
        for key, kind in NUMBER_KEYS.items():
            value = self.final_config_dict.get(key)
            kinds = (int,) if kind is int else (int, float)
            if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
                continue
            what = "an integer" if kind is int else "a number"
            raise ConfigError(
                f"Config key '{key}' must be {what}, got {value!r}; fix it where it is set "
                f"(a config file, config_dict or --{key}=...)."
            )

    def _check_valid_metric(self):
        """Fail now, not after the first epoch (RecBole's KeyError), if ``valid_metric`` is not
        among the metrics that will be computed. With ``mask_history`` on, the masked ones
        (``masked_ndcg@10``: the prefix the trainer's ``MASKED_PREFIX`` adds) are computed too."""
        final = self.final_config_dict
        metrics = [m.lower() for m in final["metrics"]]
        computed = set(metrics) | {f"{m}@{k}" for m in metrics for k in final["topk"]}
        valid_metric = final["valid_metric"].lower()
        if final.get("mask_history") is True:
            computed |= {f"masked_{m}" for m in computed}
        elif valid_metric.startswith("masked_") and valid_metric[len("masked_") :] in computed:
            raise ConfigError(
                f"valid_metric '{final['valid_metric']}' is computed with history masked; "
                f"set mask_history: True, or choose '{final['valid_metric'][len('masked_'):]}'."
            )
        if valid_metric not in computed:
            raise ConfigError(
                f"valid_metric '{final['valid_metric']}' is not computed: metrics "
                f"{final['metrics']} at topk {final['topk']}. Add it to metrics/topk or choose "
                f"one of: {', '.join(sorted(computed))}."
            )


def _unwritable(folder):
    """None if files can be created in ``folder`` (or, if it does not exist yet, in the nearest
    existing folder above it, where it would be made); else the path that blocks it."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return probe
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".recbole_llm-write-check-")
    except OSError:
        return probe
    os.close(fd)
    os.remove(tmp)
    return None
