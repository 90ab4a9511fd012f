/** EC2 key pairs as names the account holds: the AWS lease's generations (ami/lease.ts). */
import { tagList, tagRecord, type Ec2Connection } from "./ec2-client.js";

/** The key pair verbs (part of Ec2Tool). */
export interface KeyPairVerbs {
  /** Key pairs whose name starts with the prefix, with their tags. */
  listKeyPairs(region: string, prefix: string): Promise<{ name: string; id: string; tags: Record<string, string> }[]>;
  /** Creates a key pair with tags, atomically by name: false when one with that name exists. */
  createKeyPair(region: string, name: string, tags: Record<string, string>): Promise<boolean>;
  tagKeyPair(region: string, id: string, tags: Record<string, string>): Promise<void>;
  deleteKeyPair(region: string, name: string): Promise<void>;
}

export function keyPairVerbs({ client, translate }: Ec2Connection): KeyPairVerbs {
  return {
    async listKeyPairs(region, prefix) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2.send(new sdk.DescribeKeyPairsCommand({})).catch(translate);
      return (out.KeyPairs ?? [])
        .filter((k) => k.KeyName?.startsWith(prefix))
        .map((k) => ({ name: k.KeyName!, id: k.KeyPairId ?? "", tags: tagRecord(k.Tags) }));
    },
    async createKeyPair(region, name, tags) {
      const { sdk, ec2 } = await client(region);
      try {
        // The private key in the answer is dropped: the pair is a name the account holds, never used to log in.
        await ec2.send(
          new sdk.CreateKeyPairCommand({
            KeyName: name,
            TagSpecifications: [{ ResourceType: "key-pair", Tags: tagList(tags) }],
          }),
        );
        return true;
      } catch (e) {
        if ((e as { name?: string })?.name === "InvalidKeyPair.Duplicate") return false;
        return translate(e);
      }
    },
    async tagKeyPair(region, id, tags) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.CreateTagsCommand({ Resources: [id], Tags: tagList(tags) })).catch(translate);
    },
    async deleteKeyPair(region, name) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.DeleteKeyPairCommand({ KeyName: name })).catch(translate);
    },
  };
}
