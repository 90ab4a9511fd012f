/** The AMI targets by name: `bake ami --target <name>` bakes through the one named here. */
import type { Target } from "../graph/keys.js";
import type { AmiTarget } from "./target.js";
import { aws } from "./aws.js";
import { local } from "./local.js";
import { vm } from "./vm.js";

export const TARGETS: Record<Target, AmiTarget> = { aws, local, vm };

export function targetOf(name: Target): AmiTarget {
  return TARGETS[name];
}
