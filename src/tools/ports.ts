/** Ports on the loopback interface, where bake's forwards and test services listen and nowhere else. */
import { createServer } from "node:net";

/** A free TCP port on 127.0.0.1, as the kernel hands one out (free when asked; a caller races others for it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}
