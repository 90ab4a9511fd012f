/**
 * Credentials in a URL (`https://user:token@host/…`) are secrets: they never reach an argument
 * list, a label, bake.lock, a report or a message. The URL travels without them; the credentials
 * go separately to the one place that needs them (debootstrap's .netrc, an Authorization header).
 */
export interface UrlCredentials {
  host: string;
  user: string;
  password: string;
}

/** The URL without its user info, and the credentials it carried (percent-decoded). */
export function splitCredentials(url: string): { url: string; credentials?: UrlCredentials } {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/]*)@([^/?#:]*)(.*)$/i.exec(url);
  if (!m) return { url };
  const [user, password = ""] = m[2].split(/:(.*)/s).map((p) => decodeURIComponent(p ?? ""));
  return { url: `${m[1]}${m[3]}${m[4]}`, credentials: { host: m[3], user, password } };
}

export function stripCredentials(url: string): string {
  return splitCredentials(url).url;
}

/** A .netrc entry for the credentials (wget, which debootstrap runs, reads $HOME/.netrc). */
export function netrcEntry(c: UrlCredentials): string {
  const quote = (s: string) => (/^[^\s"]+$/.test(s) ? s : JSON.stringify(s));
  return `machine ${c.host} login ${quote(c.user)} password ${quote(c.password)}\n`;
}

/** An HTTP Basic Authorization header value. */
export function basicAuth(c: UrlCredentials): string {
  return `Basic ${Buffer.from(`${c.user}:${c.password}`).toString("base64")}`;
}
