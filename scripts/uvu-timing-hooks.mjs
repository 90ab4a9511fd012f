// Resolve hook: "uvu" imported by a test file means the timed wrapper; uvu's own modules and the
// wrapper itself get uvu.
const WRAPPER = new URL("./uvu-timed.mjs", import.meta.url).href;

export async function resolve(specifier, context, next) {
  const parent = context.parentURL ?? "";
  if (specifier === "uvu" && parent !== WRAPPER && !parent.includes("/node_modules/uvu/"))
    return { url: WRAPPER, shortCircuit: true };
  return next(specifier, context);
}
