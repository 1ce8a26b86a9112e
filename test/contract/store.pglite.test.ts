import { storeContract } from './store.contract.ts'
import { teEntitiesContract } from './te-entities.contract.ts'

storeContract('pglite')
teEntitiesContract('pglite')
