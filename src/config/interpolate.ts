/**
 * `${VAR}`, `${VAR:-default}` (default when unset or empty), `${VAR-default}` (default when
 * unset) and `$$` (a literal `$`) in bake.yml values. Pure: the environment is a parameter.
 */
export type Env = Readonly<Record<string, string | undefined>>;

export interface InterpolationProblem {
  /** Offset in the input string where the faulty expression starts. */
  offset: number;
  message: string;
  hint: string;
}

export type Interpolated = { ok: true; value: string } | { ok: false; problem: InterpolationProblem };

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function interpolate(input: string, env: Env): Interpolated {
  let out = "";
  let i = 0;
  while (i < input.length) {
    const c = input[i];
    if (c !== "$") {
      out += c;
      i++;
      continue;
    }
    const next = input[i + 1];
    if (next === "$") {
      out += "$";
      i += 2;
      continue;
    }
    if (next !== "{") {
      const bare = /^[A-Za-z_][A-Za-z0-9_]*/.exec(input.slice(i + 1));
      if (bare) {
        return fail(
          i,
          `"$${bare[0]}" is not read from the environment`,
          `write \${${bare[0]}} to read it, or $$${bare[0]} for a literal "$"`,
        );
      }
      out += "$";
      i++;
      continue;
    }
    const close = input.indexOf("}", i + 2);
    if (close < 0) return fail(i, `"\${" is not closed`, 'close it with "}", or write $$ for a literal "$"');
    const body = input.slice(i + 2, close);
    const m = /^([^:\-}]*)(?:(:?-)(.*))?$/s.exec(body)!;
    const name = m[1];
    if (!NAME.test(name)) {
      return fail(
        i,
        `"\${${body}}" is not a valid variable reference`,
        "use ${NAME} or ${NAME:-default}, NAME being letters, digits and _",
      );
    }
    const op = m[2];
    const fallback = m[3] ?? "";
    const value = env[name];
    if (op === ":-") out += value === undefined || value === "" ? fallback : value;
    else if (op === "-") out += value === undefined ? fallback : value;
    else if (value === undefined) {
      return fail(
        i,
        `environment variable ${name} is not set`,
        `export ${name}, or write \${${name}:-} to make it optional`,
      );
    } else out += value;
    i = close + 1;
  }
  return { ok: true, value: out };
}

function fail(offset: number, message: string, hint: string): Interpolated {
  return { ok: false, problem: { offset, message, hint } };
}
